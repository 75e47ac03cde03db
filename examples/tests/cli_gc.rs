//! `imagectl gc` beside writers, and after writers that were killed:
//! loads, copies and appends succeed while `gc --grace 0` runs in a loop
//! (each holds a lease until it has tagged); a killed load's ingest and
//! lease are shown by `fsck` and removed by the next `gc --grace 0`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{kill_group, Cleanup, Cli, TIMEOUT};

/// A directory of `files` pseudo-random files of `size` bytes.
fn random_dir(dir: &Path, seed: u64, files: usize, size: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut x = seed.wrapping_mul(6364136223846793005) | 1;
    for f in 0..files {
        let data: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        std::fs::write(dir.join(format!("f{f}")), data).unwrap();
    }
}

/// Images `t/imgN:1` appended from random trees and saved as `imgN.tar`
/// (uncompressed layers, so a load streams them as they are).
fn images(cli: &Cli, n: usize) -> Vec<std::path::PathBuf> {
    (0..n)
        .map(|i| {
            let dir = cli.tmp.path().join(format!("rootfs{i}"));
            random_dir(&dir, i as u64 + 1, 3, 400_000);
            let tag = format!("t/img{i}:1");
            cli.ok(&[
                "append",
                "--rootfs",
                dir.to_str().unwrap(),
                "--tag",
                &tag,
                "--compression",
                "none",
            ]);
            let tar = cli.tmp.path().join(format!("img{i}.tar"));
            cli.ok(&["save", "-o", tar.to_str().unwrap(), &tag]);
            cli.ok(&["rmi", &tag]);
            tar
        })
        .collect()
}

#[test]
fn loads_copies_and_appends_beside_gc_grace_zero_all_succeed() {
    let cli = Cli::new(Cleanup::Mounts);
    let tars = images(&cli, 3);
    cli.ok(&["gc", "--grace", "0"]);
    let layout = cli.tmp.path().join("layout");
    let extra = cli.tmp.path().join("extra");
    random_dir(&extra, 99, 2, 300_000);

    let stop = Arc::new(AtomicBool::new(false));
    let gc = {
        let stop = stop.clone();
        let mut cmd = cli.command(&["gc", "--grace", "0"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let program = cmd.get_program().to_owned();
        let args: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
        std::thread::spawn(move || {
            let deadline = Instant::now() + TIMEOUT;
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let out = Command::new(&program)
                    .args(&args)
                    .env_remove("IMAGECTL_STATE")
                    .env_remove("IMAGECTL_SNAPSHOTS")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                runs += 1;
            }
            runs
        })
    };
    let mut failures = Vec::new();
    for round in 0..3 {
        let mut loads: Vec<_> = tars
            .iter()
            .map(|t| {
                let mut cmd = cli.command(&["load", t.to_str().unwrap()]);
                cmd.stdout(Stdio::null()).stderr(Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect();
        // Beside the loads: a copy out of the store into a layout and back,
        // and an append.
        let tag = format!("t/extra:{round}");
        for args in [
            vec!["append", "--rootfs", extra.to_str().unwrap(), "--tag", &tag],
            vec!["copy", &tag, &format!("oci:{}:x", layout.display())],
            vec!["copy", &format!("oci:{}:x", layout.display()), "t/back:1"],
        ] {
            let out = cli.imagectl(&args);
            if !out.status.success() {
                failures.push(format!(
                    "round {round} {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        for (i, l) in loads.drain(..).enumerate() {
            let out = l.wait_with_output().unwrap();
            if !out.status.success() {
                failures.push(format!(
                    "round {round} load {i}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        // Untagged, so the next gc frees the blobs and the next round
        // writes them again (a failed writer tagged nothing: ignored here,
        // reported below).
        for i in 0..tars.len() {
            cli.imagectl(&["rmi", &format!("docker.io/t/img{i}:1")]);
        }
        cli.imagectl(&["rmi", &tag]);
        cli.imagectl(&["rmi", "t/back:1"]);
    }
    stop.store(true, Ordering::Relaxed);
    let runs = gc.join().unwrap();
    assert!(failures.is_empty(), "beside {runs} gc runs: {failures:#?}");
    assert!(runs > 0);
    let fsck = cli.ok(&["fsck"]);
    assert!(!fsck.contains("stale"), "{fsck}");
}

#[test]
fn a_killed_load_is_shown_by_fsck_and_removed_by_gc_grace_zero() {
    let cli = Cli::new(Cleanup::Mounts);
    let tars = images(&cli, 1);
    cli.ok(&["gc", "--grace", "0"]);
    let tar = std::fs::read(&tars[0]).unwrap();
    let mut cmd = cli.command(&["load", "-"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut load = cmd.spawn().unwrap();
    let mut stdin = load.stdin.take().unwrap();
    // Half the archive: the load is inside a layer's ingest, waiting for more.
    stdin.write_all(&tar[..tar.len() / 2]).unwrap();
    stdin.flush().unwrap();
    let ingest = cli.store().join("ingest");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let written: u64 = std::fs::read_dir(&ingest)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::metadata(e.path().join("data")).ok())
            .map(|m| m.len())
            .sum();
        if written > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the load never started an ingest"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // While it lives, nothing is stale and gc leaves its ingest alone.
    let gc = cli.ok(&["gc", "--grace", "0"]);
    assert!(gc.contains("removed 0 stale ingests"), "{gc}");
    assert!(!cli.ok(&["fsck"]).contains("stale"));
    kill_group(&mut load);
    let _ = load.wait();
    drop(stdin);

    let fsck = cli.ok(&["fsck"]);
    assert!(fsck.contains("stale ingest: "), "{fsck}");
    assert!(fsck.contains("stale lease: "), "{fsck}");
    let gc = cli.ok(&["gc", "--grace", "0"]);
    assert!(
        gc.contains("removed 1 stale ingests") && gc.contains("and 1 stale leases"),
        "{gc}"
    );
    let fsck = cli.ok(&["fsck"]);
    assert!(!fsck.contains("stale"), "{fsck}");
    assert_eq!(std::fs::read_dir(&ingest).unwrap().count(), 0);
}

/// The blob files of the store, by name.
fn blobs(cli: &Cli) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(cli.store().join("blobs/sha256"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Sets the modification time of every blob `age` into the past: an image
/// made that long ago.
fn age_blobs(cli: &Cli, age: Duration) {
    let when = std::time::SystemTime::now() - age;
    for b in blobs(cli) {
        let f = std::fs::File::options()
            .write(true)
            .open(cli.store().join("blobs/sha256").join(b))
            .unwrap();
        f.set_modified(when).unwrap();
    }
}

/// `imagectl rmi x && imagectl gc` frees x's blobs, as `docker rmi` does,
/// for an image made a minute ago (the default grace is seconds, not ten
/// minutes); blobs written a moment ago and unreferenced are kept by the
/// default (a tool writing without a lease may be about to tag them) and
/// freed by `--grace 0`.
#[test]
fn rmi_then_gc_frees_the_images_blobs() {
    let cli = Cli::new(Cleanup::Mounts);
    let rootfs = cli.tmp.path().join("rootfs");
    random_dir(&rootfs, 7, 2, 100_000);
    let append = |tag: &str| {
        cli.ok(&["append", "--rootfs", rootfs.to_str().unwrap(), "--tag", tag]);
    };
    append("t/old:1");
    let made = blobs(&cli);
    assert!(made.len() >= 3, "layer, config, manifest: {made:?}");
    age_blobs(&cli, Duration::from_secs(60));
    cli.ok(&["rmi", "t/old:1"]);
    let gc = cli.ok(&["gc"]);
    assert!(
        gc.starts_with(&format!("removed {} blobs", made.len())),
        "{gc}"
    );
    assert!(blobs(&cli).is_empty(), "left: {:?}", blobs(&cli));

    // Just written: kept by the default grace, freed by --grace 0.
    // (The config records when it was made: its digest may differ.)
    append("t/new:1");
    let made = blobs(&cli);
    cli.ok(&["rmi", "t/new:1"]);
    age_blobs(&cli, Duration::ZERO);
    let gc = cli.ok(&["gc"]);
    assert!(gc.starts_with("removed 0 blobs"), "{gc}");
    assert_eq!(blobs(&cli), made);
    let gc = cli.ok(&["gc", "--grace", "0"]);
    assert!(
        gc.starts_with(&format!("removed {} blobs", made.len())),
        "{gc}"
    );
    assert!(blobs(&cli).is_empty());
}

/// `gc --help` says why the default grace is short: leases, not the grace,
/// keep concurrent writers safe, so `rmi && gc` frees at once.
#[test]
fn gc_help_says_why_the_default_grace_is_short() {
    let cli = Cli::new(Cleanup::Mounts);
    let help = cli.ok(&["gc", "--help"]);
    for phrase in [
        "imagectl rmi x && imagectl gc",
        "holds a lease",
        "[default: 10]",
        "--grace 0",
    ] {
        assert!(help.contains(phrase), "{phrase:?} missing from:\n{help}");
    }
}
