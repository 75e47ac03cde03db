//! Volumes (issue 16) through the library: named and anonymous volumes
//! under runc, crun and the native backend alike; the copy from the
//! image bounded and typed; `delete` keeps anonymous volumes,
//! `delete_with_volumes` removes them. As root; a missing tool skips a
//! test loudly unless CI=true.

mod common;

use std::path::Path;

use image_core::config::RunConfig;
use image_core::{Classify, ErrorKind};
use image_runtime::volume::{VolumeError, MAX_COPY_DEPTH};
use image_runtime::{
    ContainerError, NativeOptions, Rootfs, RunOptions, Runtime, RuntimeKind, Stdio, Volume,
};

use common::{busybox_rootfs, ready, TIMEOUT};

const APPLETS: &[&str] = &["sh", "cat", "echo", "readlink", "true"];

/// The image's config: VOLUME /data, `sh` as its command.
fn config() -> RunConfig {
    serde_json::from_value(serde_json::json!({
        "Env": ["PATH=/bin"],
        "Cmd": ["sh"],
        "Volumes": {"/data": {}},
    }))
    .unwrap()
}

fn sh(script: &str) -> RunOptions {
    let mut o = RunOptions::new();
    o.cmd = Some(vec!["sh".into(), "-c".into(), script.into()]);
    o
}

/// Runs `script` in a container of `rt` on `rootfs` with `volumes`; its
/// stdout and the container's ID (the container is kept).
fn run(rt: &Runtime, rootfs: &Path, volumes: &[Volume], script: &str) -> (String, String) {
    let mut opts = sh(script);
    opts.volumes = volumes.to_vec();
    let c = rt
        .container(Rootfs::Directory(rootfs.to_owned()))
        .run_config(config())
        .options(opts)
        .create()
        .unwrap();
    let id = c.id().to_owned();
    let (_c, exit) = c.run(Stdio::capture(), TIMEOUT).unwrap();
    let exit = exit.unwrap();
    assert!(exit.status.success(), "{}", exit.stderr_str());
    (exit.stdout_str(), id)
}

fn named(name: &str) -> Volume {
    format!("{name}:/data").parse().unwrap()
}

/// The same behaviour under every backend: the image's content copied
/// into a fresh volume (a symlink kept a symlink), a named volume shared
/// between containers, anonymous ones removed by `delete_with_volumes`
/// only.
fn volumes_under(rt: &Runtime, rootfs: &Path) {
    let (out, a) = run(
        rt,
        rootfs,
        &[named("shared")],
        "cat /data/seed; readlink /data/link; echo second > /data/second",
    );
    assert_eq!(out, "seed\n/etc/shadow\n");
    let (out, b) = run(rt, rootfs, &[named("shared")], "cat /data/second");
    assert_eq!(out, "second\n");
    let info = rt.volumes().inspect("shared").unwrap();
    assert_eq!(info.containers, {
        let mut v = vec![a.clone(), b.clone()];
        v.sort();
        v
    });
    assert!(std::fs::symlink_metadata(info.mountpoint.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    // Anonymous: one per container for VOLUME /data.
    let (out, c) = run(rt, rootfs, &[], "cat /data/seed; echo mine > /data/mine");
    assert_eq!(out, "seed\n");
    let anonymous: Vec<_> = rt
        .volumes()
        .list()
        .unwrap()
        .into_iter()
        .filter(|v| v.anonymous)
        .collect();
    assert_eq!(anonymous.len(), 1);
    assert_eq!(anonymous[0].containers, std::slice::from_ref(&c));
    rt.delete(&c).unwrap();
    assert!(anonymous[0].mountpoint.join("mine").is_file());
    let (_, d) = run(rt, rootfs, &[], "true");
    assert_eq!(rt.volumes().list().unwrap().len(), 3);
    rt.delete_with_volumes(&d).unwrap();
    assert_eq!(rt.volumes().list().unwrap().len(), 2);
    // In use: refused, typed; once its containers are gone, removed.
    let e = rt.volumes().remove("shared", false).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, VolumeError::InUse { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    rt.delete_with_volumes(&a).unwrap();
    rt.delete_with_volumes(&b).unwrap();
    assert!(rt
        .volumes()
        .inspect("shared")
        .unwrap()
        .containers
        .is_empty());
    rt.volumes().remove("shared", false).unwrap();
    rt.volumes().remove(&anonymous[0].name, false).unwrap();
    assert!(rt.volumes().list().unwrap().is_empty());
}

fn rootfs_with_data(dir: &Path) {
    busybox_rootfs(dir, APPLETS);
    std::fs::write(dir.join("data/seed"), "seed\n").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", dir.join("data/link")).unwrap();
}

#[test]
fn volumes_under_native_runc_and_crun() {
    if !ready(&["runc", "crun"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    rootfs_with_data(&rootfs);
    let native = Runtime::native(&tmp.path().join("native"), NativeOptions::default()).unwrap();
    volumes_under(&native, &rootfs);
    let runc = Runtime::oci(&tmp.path().join("runc"), RuntimeKind::Runc).unwrap();
    volumes_under(&runc, &rootfs);
    let crun = Runtime::oci(&tmp.path().join("crun"), RuntimeKind::Crun).unwrap();
    volumes_under(&crun, &rootfs);
}

/// `docker rm -v`: an anonymous volume that another container mounts by
/// its generated name stays while that container uses it (and stays after:
/// it uses it by name); the deleted container's other anonymous volume
/// goes.
#[test]
fn an_anonymous_volume_another_container_mounts_is_kept_by_rm_v() {
    if !ready(&[]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    rootfs_with_data(&rootfs);
    let rt = Runtime::native(&tmp.path().join("state"), NativeOptions::default()).unwrap();
    let (_, first) = run(&rt, &rootfs, &[], "echo first > /data/first");
    let anonymous = rt.volumes().list().unwrap();
    assert_eq!(anonymous.len(), 1);
    let by_name: Volume = format!("{}:/elsewhere", anonymous[0].name).parse().unwrap();
    let (out, second) = run(&rt, &rootfs, &[by_name], "cat /elsewhere/first");
    assert_eq!(out, "first\n");
    assert_eq!(names(&rt).len(), 2, "the second's own anonymous one too");
    rt.delete_with_volumes(&first).unwrap();
    let info = rt.volumes().inspect(&anonymous[0].name).unwrap();
    assert_eq!(info.containers, std::slice::from_ref(&second));
    assert!(info.mountpoint.join("first").is_file());
    rt.delete_with_volumes(&second).unwrap();
    assert_eq!(names(&rt), [anonymous[0].name.clone()]);
}

/// The names of `rt`'s volumes.
fn names(rt: &Runtime) -> Vec<String> {
    let list = rt.volumes().list().unwrap();
    list.into_iter().map(|v| v.name).collect()
}

/// A tree at the volume path deeper than the copy allows is refused with
/// a typed error, and the refused container leaves no volume behind.
#[test]
fn a_copy_deeper_than_the_bound_is_refused_and_leaves_nothing() {
    if !ready(&[]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs, APPLETS);
    let mut deep = rootfs.join("data");
    for _ in 0..MAX_COPY_DEPTH {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    let rt = Runtime::native(&tmp.path().join("state"), NativeOptions::default()).unwrap();
    let e = rt
        .container(Rootfs::Directory(rootfs.clone()))
        .run_config(config())
        .options(sh("true"))
        .create()
        .unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(
            e,
            ContainerError::Volume(VolumeError::TooLarge { what: "levels", .. })
        ),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(rt.volumes().list().unwrap().is_empty());
    assert!(rt.list().unwrap().is_empty());
    // One level less is copied whole.
    std::fs::remove_dir(&deep).unwrap();
    let (out, id) = run(&rt, &rootfs, &[], "echo ok");
    assert_eq!(out, "ok\n");
    rt.delete_with_volumes(&id).unwrap();
    assert!(rt.volumes().list().unwrap().is_empty());
}

/// Docker's copy-up of a new volume makes every kind of entry: a fifo, a
/// character and a block device node and a socket node at the image's
/// VOLUME path are made anew (same type and device number, never opened),
/// and each entry, those and a file and a directory, keeps its owner, its
/// mode (set-id bits included) and its extended attributes.
#[test]
fn a_new_volume_copies_device_nodes_fifos_and_sockets_with_owners_modes_and_xattrs() {
    use rustix::fs::{FileType, Mode};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !ready(&[]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs, APPLETS);
    let data = rootfs.join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("file"), "x").unwrap();
    let nodes = [
        ("fifo", FileType::Fifo, 0),
        ("null", FileType::CharacterDevice, rustix::fs::makedev(1, 3)),
        ("loop", FileType::BlockDevice, rustix::fs::makedev(7, 200)),
        ("sock", FileType::Socket, 0),
    ];
    for (name, kind, dev) in nodes {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            data.join(name),
            kind,
            Mode::from_raw_mode(0o600),
            dev,
        )
        .unwrap();
    }
    // Owner, mode and one attribute per entry, all different.
    let entries = ["fifo", "null", "loop", "sock", "file", "sub"];
    for (i, name) in entries.iter().enumerate() {
        let p = data.join(name);
        let id = 1000 + i as u32;
        std::os::unix::fs::chown(&p, Some(id), Some(id + 100)).unwrap();
        let mode = if *name == "sub" {
            0o2750
        } else {
            0o4640 - i as u32
        };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        // user.* is for files and directories only; trusted.* for any.
        let key = if matches!(*name, "file" | "sub") {
            "user.note"
        } else {
            "trusted.note"
        };
        rustix::fs::setxattr(&p, key, name.as_bytes(), rustix::fs::XattrFlags::empty()).unwrap();
    }
    let rt = Runtime::native(&tmp.path().join("state"), NativeOptions::default()).unwrap();
    let (_, id) = run(&rt, &rootfs, &[named("nodes")], "test -p /data/fifo");
    let copied = rt.volumes().mountpoint("nodes").unwrap();
    for (name, kind, dev) in nodes {
        let m = std::fs::symlink_metadata(copied.join(name)).unwrap();
        assert_eq!(FileType::from_raw_mode(m.mode()), kind, "{name}");
        assert_eq!(m.rdev(), dev, "{name}");
    }
    for name in entries {
        let (src, dst) = (data.join(name), copied.join(name));
        let (a, b) = (
            std::fs::symlink_metadata(&src).unwrap(),
            std::fs::symlink_metadata(&dst).unwrap(),
        );
        assert_eq!(
            (b.uid(), b.gid(), b.mode()),
            (a.uid(), a.gid(), a.mode()),
            "{name}"
        );
        let key = if matches!(name, "file" | "sub") {
            "user.note"
        } else {
            "trusted.note"
        };
        let mut v = [0u8; 16];
        let n = rustix::fs::getxattr(&dst, key, &mut v[..]).unwrap();
        assert_eq!(&v[..n], name.as_bytes(), "{name}");
    }
    rt.delete(&id).unwrap();
}
