//! `imagectl squash`, `rebase`, `mutate` and `export` end to end on a
//! busybox-static image: the results run (imagectl's runtime; podman where
//! this sandbox lets it, else podman's own mount of the image), skopeo
//! reads them from the store as an OCI layout, and an export extracted by
//! GNU tar holds the final filesystem. A missing tool or privilege skips
//! the test loudly unless CI=true.

mod common;

use std::path::Path;
use std::process::Command;

use common::{container_rootfs, ready, run_bounded, Cleanup, Cli};
use image_store::tags::normalize_name;

const BASE: &str = "test.local/surgery-base:1";
const BASE2: &str = "test.local/surgery-base:2";
const APPLETS: &[&str] = &["sh", "echo", "cat", "test", "ls"];

fn write(dir: &Path, rel: &str, data: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn oci_ref(cli: &Cli, tag: &str) -> String {
    format!(
        "oci:{}:{}",
        cli.store().display(),
        normalize_name(tag).unwrap()
    )
}

fn checked(mut cmd: Command) -> String {
    let shown = format!("{cmd:?}");
    cmd.env("TZ", "UTC");
    let out = run_bounded(cmd);
    assert!(
        out.status.success(),
        "{shown}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the test's images hold, read in a container.
const PROBE: &str =
    "cat /app/data; test -e /tmp/secret && echo leaked; echo $GREETING; cat /etc/base-marker";

#[test]
fn squashed_rebased_mutated_and_exported_images_run_and_read_alike() {
    if !ready(&["runc", "skopeo", "tar"]) {
        return;
    }
    let cli = Cli::new(Cleanup::Containers);
    let tmp = cli.tmp.path();
    let rootfs = tmp.join("rootfs");
    container_rootfs(&rootfs, APPLETS);
    write(&rootfs, "etc/base-marker", "old base\n");
    cli.append_shell_image(&rootfs, BASE);
    let rootfs2 = tmp.join("rootfs2");
    container_rootfs(&rootfs2, APPLETS);
    write(&rootfs2, "etc/base-marker", "new base\n");
    cli.append_shell_image(&rootfs2, BASE2);

    // Three layers on the base: a secret added, removed, data replaced.
    let add1 = tmp.join("add1");
    write(&add1, "app/data", "v1\n");
    write(&add1, "tmp/secret", "hunter2\n");
    let add2 = tmp.join("add2");
    write(&add2, "app/data", "v2\n");
    let a1 = add1.to_str().unwrap();
    let a2 = add2.to_str().unwrap();
    cli.ok(&["mutate", BASE, "app:1", "--append", a1]);
    cli.ok(&["mutate", "app:1", "app:2", "--remove", "/tmp/secret"]);
    cli.ok(&[
        "mutate",
        "app:2",
        "app:3",
        "--append",
        a2,
        "--env",
        "GREETING=hi",
        "--label",
        "a=b",
    ]);
    let want = "v2\nhi\nold base\n";
    assert_eq!(cli.ok(&["run", "--rm", "app:3", "sh", "-c", PROBE]), want);

    // Squash above the base, and everything.
    let out = cli.ok(&["squash", "app:3", "app:sq", "--base", BASE]);
    assert!(out.contains("squashed 3 layers (from layer 1)"), "{out}");
    assert!(out.contains("freed:"), "{out}");
    cli.ok(&["squash", "app:3", "app:all"]);
    for tag in ["app:sq", "app:all"] {
        assert_eq!(
            cli.ok(&["run", "--rm", tag, "sh", "-c", PROBE]),
            want,
            "{tag}"
        );
    }
    let inspected = checked({
        let mut c = Command::new("skopeo");
        c.arg("inspect").arg(oci_ref(&cli, "app:sq"));
        c
    });
    let v: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2, "{inspected}");

    // Rebase onto the new base: the same upper layers, the new marker.
    cli.ok(&[
        "rebase",
        "app:3",
        "--old-base",
        BASE,
        "--new-base",
        BASE2,
        "app:rb",
    ]);
    assert_eq!(
        cli.ok(&["run", "--rm", "app:rb", "sh", "-c", PROBE]),
        "v2\nhi\nnew base\n"
    );
    let err = cli.fails(&[
        "rebase",
        "app:3",
        "--old-base",
        BASE2,
        "--new-base",
        BASE,
        "app:bad",
    ]);
    assert!(err.contains("is not a base of"), "{err}");
    assert!(err.starts_with("imagectl: failed precondition"), "{err}");
    checked({
        let mut c = Command::new("skopeo");
        c.arg("inspect").arg(oci_ref(&cli, "app:rb"));
        c
    });

    // Mutate the config: entrypoint, command, env, user, workdir.
    cli.ok(&[
        "mutate",
        BASE,
        "m:1",
        "--env",
        "X=1",
        "--workdir",
        "/tmp",
        "--user",
        "0:0",
        "--entrypoint",
        "sh",
        "-c",
        "--cmd",
        "echo $X; pwd",
    ]);
    assert_eq!(cli.ok(&["run", "--rm", "m:1"]), "1\n/tmp\n");
    let config = checked({
        let mut c = Command::new("skopeo");
        c.arg("inspect").arg("--config").arg(oci_ref(&cli, "m:1"));
        c
    });
    assert!(config.contains("\"WorkingDir\": \"/tmp\""), "{config}");
    let err = cli.fails(&["mutate", BASE, "m:bad", "--env", "NOVALUE"]);
    assert!(err.contains("not KEY=value"), "{err}");

    // Export: to a file and to stdout alike; GNU tar extracts the final tree.
    let file = tmp.join("app.tar");
    cli.ok(&["export", "app:3", "-o", file.to_str().unwrap()]);
    // (Standard output into a file: a pipe read only at exit would fill.)
    let piped = tmp.join("stdout.tar");
    let status = Command::new("timeout")
        .arg("120")
        .arg(env!("CARGO_BIN_EXE_imagectl"))
        .arg("--store")
        .arg(cli.store())
        .args(["export", "app:3"])
        .stdout(std::fs::File::create(&piped).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&piped).unwrap()
    );
    let listing = checked({
        let mut c = Command::new("tar");
        c.arg("-tf").arg(&file);
        c
    });
    assert!(!listing.contains(".wh."), "{listing}");
    assert!(!listing.contains("tmp/secret"), "{listing}");
    let x = tmp.join("x");
    std::fs::create_dir(&x).unwrap();
    checked({
        let mut c = Command::new("tar");
        c.arg("-xf").arg(&file).arg("-C").arg(&x);
        c
    });
    assert_eq!(std::fs::read_to_string(x.join("app/data")).unwrap(), "v2\n");
    assert!(x.join("bin/busybox").is_file());

    podman_reads(&cli, "app:sq", "v2\n");
    podman_reads(&cli, "app:rb", "v2\n");
    podman_reads(&cli, "app:3", "v2\n");
}

/// podman gets the image from the store (skopeo copies it into a private
/// podman storage) and runs it; should the sandbox refuse the setrlimit an
/// OCI runtime makes (it refuses raising RLIMIT_NPROC, hence the explicit
/// `--ulimit`s), podman's own mount of the image is read instead.
fn podman_reads(cli: &Cli, tag: &str, data: &str) {
    if !ready(&["podman"]) {
        return;
    }
    let dir = cli.tmp.path();
    let (root, runroot) = (dir.join("podman-root"), dir.join("podman-run"));
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "none"])
            .args(args);
        c
    };
    let name = format!("localhost/surgery-{}", tag.replace(':', "-"));
    let dest = format!(
        "containers-storage:[vfs@{}+{}]{name}:latest",
        root.display(),
        runroot.display()
    );
    checked({
        let mut c = Command::new("skopeo");
        c.args(["copy", "--quiet"])
            .arg(oci_ref(cli, tag))
            .arg(&dest);
        c
    });
    let out = run_bounded(podman(&[
        "run",
        "--rm",
        "--runtime",
        "runc",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        &name,
        "cat",
        "/app/data",
    ]));
    if out.status.success() {
        assert_eq!(String::from_utf8_lossy(&out.stdout), data);
    } else {
        eprintln!(
            "podman run {tag} failed ({}), reading podman's mount of it: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mnt = checked(podman(&["image", "mount", &name]));
        let mnt = Path::new(mnt.trim());
        assert_eq!(std::fs::read_to_string(mnt.join("app/data")).unwrap(), data);
        assert!(!mnt.join("tmp/secret").exists());
        checked(podman(&["image", "unmount", &name]));
    }
    let _ = run_bounded(podman(&["rmi", "--all", "--force"]));
}
