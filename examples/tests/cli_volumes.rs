//! `imagectl run`'s smaller gaps (issue 16): `--cpus` above the host's
//! CPUs refused; anonymous volumes for an image's VOLUME paths and named
//! volumes (`-v name:/path`), initialised from the image's content,
//! `rm -v`, `imagectl volume ls|create|inspect|rm`. As root, with the
//! native backend, on an image appended in the test from busybox-static.
//! A missing tool or privilege skips the test loudly unless CI=true.

mod common;

use std::path::Path;

use common::Cli;

const IMAGE: &str = "test.local/vol-busybox:1";
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "readlink", "true", "sleep", "test",
];

/// The CPUs `imagectl` may run on (its affinity, as `nproc` counts them).
fn host_cpus() -> u32 {
    let out = std::process::Command::new("nproc").output().expect("nproc");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn cpus_above_the_host_are_refused_with_both_numbers() {
    let Some(cli) = Cli::with_shell_image(APPLETS, IMAGE) else {
        return;
    };
    let n = host_cpus();
    let too_many = format!("{}.5", n);
    let err = cli.fails(&["run", "--rm", "--cpus", &too_many, IMAGE, "true"]);
    assert!(
        err.contains(&format!(
            "range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("invalid cpus {n}.50")), "{err}");
    // Nothing is left of the refused container.
    assert_eq!(cli.ok(&["ps", "-q"]), "");
}

/// The volumes' directory of the CLI's default state directory.
fn volumes_dir(cli: &Cli) -> std::path::PathBuf {
    cli.tmp.path().join("containers/volumes")
}

/// The names `volume ls -q` prints.
fn volume_names(cli: &Cli) -> Vec<String> {
    cli.ok(&["-q", "volume", "ls"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A [`Cli`] with IMAGE: VOLUME /data, holding `/data/seed`,
/// `/data/sub/deep` and a symlink `/data/link` to `/etc/shadow`; `None`
/// when containers cannot run here.
fn volume_cli() -> Option<Cli> {
    let cli = Cli::with_shell_image(APPLETS, "test.local/vol-base:1")?;
    let layer = cli.tmp.path().join("layer");
    std::fs::create_dir_all(layer.join("data/sub")).unwrap();
    std::fs::write(layer.join("data/seed"), "from the image\n").unwrap();
    std::fs::write(layer.join("data/sub/deep"), "deep\n").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", layer.join("data/link")).unwrap();
    let layer = layer.to_str().unwrap();
    let base = "test.local/vol-base:1";
    cli.ok(&[
        "mutate", base, IMAGE, "--volume", "/data", "--append", layer,
    ]);
    Some(cli)
}

#[test]
fn named_volumes_are_filled_from_the_image_shared_and_kept() {
    let Some(cli) = volume_cli() else {
        return;
    };
    // The first container sees the image's files and writes another.
    let out = cli.ok(&[
        "run",
        "--name",
        "a",
        "-v",
        "vol1:/data",
        IMAGE,
        "sh",
        "-c",
        "cat /data/seed /data/sub/deep; readlink /data/link; echo second > /data/second",
    ]);
    assert_eq!(out, "from the image\ndeep\n/etc/shadow\n");
    // The copy kept the symlink a symlink: nothing was read through it.
    let data = volumes_dir(&cli).join("vol1/_data");
    let link = std::fs::symlink_metadata(data.join("link")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(data.join("link")).unwrap(),
        Path::new("/etc/shadow")
    );
    // A second container with the same volume sees both files.
    let out = cli.ok(&[
        "run",
        "--rm",
        "-v",
        "vol1:/data",
        IMAGE,
        "cat",
        "/data/seed",
        "/data/second",
    ]);
    assert_eq!(out, "from the image\nsecond\n");
    // The named volume covers /data: no anonymous volume was made.
    assert_eq!(volume_names(&cli), ["vol1"]);
    let info = cli.ok(&["volume", "inspect", "vol1"]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info[0]["anonymous"], false);
    assert_eq!(info[0]["containers"], serde_json::json!(["a"]));
    // In use by `a`: refused; `rm -v a` keeps a named volume.
    let err = cli.fails(&["volume", "rm", "vol1"]);
    assert!(err.contains("volume vol1 is in use"), "{err}");
    cli.ok(&["rm", "-v", "a"]);
    assert_eq!(volume_names(&cli), ["vol1"]);
    cli.ok(&["volume", "rm", "vol1"]);
    assert!(volume_names(&cli).is_empty());
    assert!(!volumes_dir(&cli).join("vol1").exists());
    // `volume create` then `ls`.
    cli.ok(&["volume", "create", "made"]);
    assert_eq!(volume_names(&cli), ["made"]);
}

#[test]
fn anonymous_volumes_go_with_rm_v_and_stay_without() {
    let Some(cli) = volume_cli() else {
        return;
    };
    let out = cli.ok(&[
        "run",
        "--name",
        "b",
        IMAGE,
        "sh",
        "-c",
        "cat /data/seed; echo new > /data/new",
    ]);
    assert_eq!(out, "from the image\n");
    let b_volumes = volume_names(&cli);
    assert_eq!(b_volumes.len(), 1, "{b_volumes:?}");
    let b_volume = &b_volumes[0];
    assert_eq!(b_volume.len(), 64);
    let data = volumes_dir(&cli).join(b_volume).join("_data");
    assert_eq!(std::fs::read_to_string(data.join("new")).unwrap(), "new\n");
    assert!(std::fs::symlink_metadata(data.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    // rm without -v keeps it.
    cli.ok(&["rm", "b"]);
    assert_eq!(volume_names(&cli), b_volumes);
    assert!(data.join("new").is_file());
    // rm -v removes the container's own, not b's.
    cli.ok(&["run", "--name", "c", IMAGE, "true"]);
    assert_eq!(volume_names(&cli).len(), 2);
    cli.ok(&["rm", "-v", "c"]);
    assert_eq!(volume_names(&cli), b_volumes);
    // run --rm removes its anonymous volume, as Docker's does.
    cli.ok(&["run", "--rm", IMAGE, "true"]);
    assert_eq!(volume_names(&cli), b_volumes);
    // A -v host path over /data makes no anonymous volume.
    let host = cli.tmp.path().join("host");
    let spec = format!("{}:/data:ro", host.display());
    cli.ok(&["run", "--rm", "-v", &spec, IMAGE, "true"]);
    assert_eq!(volume_names(&cli), b_volumes);
}

#[test]
fn volume_names_with_a_slash_or_dots_are_refused() {
    let Some(cli) = volume_cli() else {
        return;
    };
    for bad in ["../x", "a/b", "..", ".x", "x"] {
        let spec = format!("{bad}:/data");
        let err = cli.fails(&["run", "--rm", "-v", &spec, IMAGE, "true"]);
        assert!(err.contains("invalid volume"), "{bad}: {err}");
        let err = cli.fails(&["volume", "create", bad]);
        assert!(err.contains("invalid volume name"), "{bad}: {err}");
        let err = cli.fails(&["volume", "rm", bad]);
        assert!(err.contains("invalid volume name"), "{bad}: {err}");
    }
    assert!(volume_names(&cli).is_empty());
    assert!(!cli.tmp.path().join("containers/x").exists());
    assert_eq!(cli.ok(&["ps", "-q"]), "");
}

/// `run -d --rm` containers whose monitors were killed (SIGKILL, so they
/// never removed them): the next command's gc, here opened by `rm -f` of
/// one of them, removes both with their anonymous volumes, as Docker
/// removes a `--rm` container's; the named volume they used stays.
#[test]
fn a_crashed_run_d_rm_loses_its_anonymous_volumes_and_keeps_named_ones() {
    let Some(cli) = volume_cli() else {
        return;
    };
    let forever = "while true; do sleep 0.1; done";
    for name in ["crashed-1", "crashed-2"] {
        cli.ok(&[
            "run",
            "-d",
            "--rm",
            "--name",
            name,
            "-v",
            "kept:/kept",
            IMAGE,
            "sh",
            "-c",
            forever,
        ]);
        cli.wait_running(name);
    }
    let names = volume_names(&cli);
    assert_eq!(names.len(), 3, "two anonymous and kept: {names:?}");
    let records: Vec<serde_json::Value> = serde_json::from_str(&cli.ok(&["ps", "--json"])).unwrap();
    for r in &records {
        let pid = rustix::process::Pid::from_raw(r["owner"]["pid"].as_i64().unwrap() as i32);
        rustix::process::kill_process(pid.unwrap(), rustix::process::Signal::KILL).unwrap();
    }
    image_testsupport::process::eventually("both to be unknown", || {
        (cli.ok(&["ps"]).matches("unknown").count() == 2).then_some(())
    });
    cli.ok(&["rm", "-f", "crashed-1"]);
    assert_eq!(cli.ok(&["ps", "-q"]), "");
    assert_eq!(volume_names(&cli), ["kept"]);
}

/// gc of a crashed `run -d --rm` container keeps its anonymous volume
/// while another container mounts it by its generated name (`docker rm -v`
/// leaves a volume in use); that container's own `rm -v` keeps it too (it
/// named it).
#[test]
fn a_crashed_run_d_rm_keeps_an_anonymous_volume_another_container_uses() {
    let Some(cli) = volume_cli() else {
        return;
    };
    let forever = "while true; do sleep 0.1; done";
    cli.ok(&[
        "run", "-d", "--rm", "--name", "crashed", IMAGE, "sh", "-c", forever,
    ]);
    cli.wait_running("crashed");
    let names = volume_names(&cli);
    assert_eq!(names.len(), 1, "{names:?}");
    let shared = names[0].clone();
    let by_name = format!("{shared}:/shared");
    cli.ok(&["create", "--name", "user", "-v", &by_name, IMAGE, "true"]);
    assert_eq!(volume_names(&cli).len(), 2, "with the user's own");
    let records: Vec<serde_json::Value> = serde_json::from_str(&cli.ok(&["ps", "--json"])).unwrap();
    let crashed = records.iter().find(|r| r["id"] == "crashed").unwrap();
    let pid = rustix::process::Pid::from_raw(crashed["owner"]["pid"].as_i64().unwrap() as i32);
    rustix::process::kill_process(pid.unwrap(), rustix::process::Signal::KILL).unwrap();
    image_testsupport::process::eventually("it to be unknown", || {
        cli.ok(&["ps"]).contains("unknown").then_some(())
    });
    cli.ok(&["rm", "-f", "crashed"]);
    assert!(
        volume_names(&cli).contains(&shared),
        "removed under its user"
    );
    cli.ok(&["rm", "-v", "user"]);
    assert_eq!(volume_names(&cli), [shared]);
}

/// An image whose VOLUME path holds a fifo and a character device node
/// (appended as a layer, so they come from the image's tar): the new
/// anonymous volume holds both, of the same type, device number, owner
/// and mode, as Docker's copy-up makes them.
#[test]
fn a_new_volume_holds_the_images_fifo_and_device_node() {
    use rustix::fs::{FileType, Mode};
    use std::os::unix::fs::MetadataExt;
    let Some(cli) = Cli::with_shell_image(APPLETS, "test.local/vol-base:1") else {
        return;
    };
    let layer = cli.tmp.path().join("nodes");
    std::fs::create_dir_all(layer.join("data")).unwrap();
    let nodes = [
        ("fifo", FileType::Fifo, 0),
        ("null", FileType::CharacterDevice, rustix::fs::makedev(1, 3)),
    ];
    for (name, kind, dev) in nodes {
        let p = layer.join("data").join(name);
        rustix::fs::mknodat(rustix::fs::CWD, &p, kind, Mode::from_raw_mode(0o640), dev).unwrap();
        std::os::unix::fs::chown(&p, Some(1234), Some(4321)).unwrap();
    }
    let image = "test.local/vol-nodes:1";
    let layer = layer.to_str().unwrap();
    cli.ok(&[
        "mutate",
        "test.local/vol-base:1",
        image,
        "--volume",
        "/data",
        "--append",
        layer,
    ]);
    let out = cli.ok(&[
        "run",
        "--name",
        "n",
        image,
        "sh",
        "-c",
        "test -p /data/fifo && test -c /data/null && echo both",
    ]);
    assert_eq!(out, "both\n");
    let names = volume_names(&cli);
    assert_eq!(names.len(), 1, "{names:?}");
    let data = volumes_dir(&cli).join(&names[0]).join("_data");
    for (name, kind, dev) in nodes {
        let m = std::fs::symlink_metadata(data.join(name)).unwrap();
        assert_eq!(FileType::from_raw_mode(m.mode()), kind, "{name}");
        assert_eq!(m.rdev(), dev, "{name}");
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (1234, 4321, 0o640),
            "{name}"
        );
    }
    cli.ok(&["rm", "-v", "n"]);
    assert!(volume_names(&cli).is_empty());
}
