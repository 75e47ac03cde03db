//! `imagectl run`, `create`/`start`/`ps`/`kill`/`rm`, `commit` and `bundle`
//! end to end, as root, with the default (native) backend, the real runc
//! for an exported bundle (and crun when present), on an
//! image appended in the test from a busybox-static root filesystem. A
//! missing tool or privilege skips the test loudly unless CI=true.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{container_rootfs, ready, run_bounded, which, Cleanup, Cli, TIMEOUT};

const IMAGE: &str = "test.local/cli-busybox:1";
const COMMITTED: &str = "test.local/cli-busybox:committed";
const APPLETS: &[&str] = &["sh", "echo", "cat", "ls", "rm", "sleep", "hostname", "id"];

/// The root filesystem of IMAGE, with a file for a container to delete.
fn image_rootfs(dir: &Path) {
    container_rootfs(dir, APPLETS);
    std::fs::write(dir.join("etc/doomed"), "to be deleted\n").unwrap();
}

/// `ps` shows a container's command as `docker ps` does: quoted, its
/// control characters escaped, cut to 20 characters (all of it with
/// `--no-trunc`): an image's command that holds terminal escapes (here a
/// window title and a screen clear) or megabytes never reaches the
/// operator's terminal as it is. (50,000 bytes: the test's runner reads
/// a command's output only once it exited, so more than a pipe's 64 KiB
/// would hang it.)
#[test]
fn ps_shows_a_command_quoted_escaped_and_cut() {
    if !ready(&[]) {
        return;
    }
    let cli = Cli::new(Cleanup::Containers);
    let rootfs = cli.tmp.path().join("rootfs");
    image_rootfs(&rootfs);
    cli.append_shell_image(&rootfs, IMAGE);
    let hostile = format!("\u{1b}]0;pwned\u{7}\u{1b}[2J{}", "x".repeat(50_000));
    cli.ok(&["create", "--name", "esc", IMAGE, "echo", &hostile]);
    let line = |args: &[&str]| {
        cli.ok(args)
            .lines()
            .find(|l| l.starts_with("esc "))
            .unwrap_or_default()
            .to_owned()
    };
    for (args, longest) in [(&["ps"][..], 200), (&["ps", "--no-trunc"][..], 60_000)] {
        let l = line(args);
        assert!(
            !l.contains(['\u{1b}', '\u{7}']),
            "{args:?}: raw control characters"
        );
        assert!(l.len() < longest, "{args:?}: {} bytes", l.len());
    }
    let cut = line(&["ps"]);
    assert!(
        cut.ends_with(r#""echo \u{1b}]0;pwned\u{7}\u{1b}[2J…""#),
        "{cut}"
    );
    assert!(line(&["ps", "--no-trunc"]).ends_with(&format!("{}\"", "x".repeat(50_000))));
    cli.ok(&["rm", "esc"]);
}

#[test]
fn imagectl_runs_commits_and_bundles() {
    if !ready(&["runc"]) {
        return;
    }
    let cli = Cli::new(Cleanup::Containers);
    let rootfs = cli.tmp.path().join("rootfs");
    image_rootfs(&rootfs);
    cli.append_shell_image(&rootfs, IMAGE);

    // run --rm prints the output and leaves nothing.
    assert_eq!(cli.ok(&["run", "--rm", IMAGE, "echo", "hi"]), "hi\n");
    assert_eq!(cli.ok(&["ps", "-q"]), "");
    // The exit code passes through.
    let out = cli.imagectl(&["run", "--rm", IMAGE, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    // Options: env, workdir, user, read-only root.
    let out = cli.ok(&[
        "run",
        "--rm",
        "-e",
        "A=b",
        "-w",
        "/made",
        "-u",
        "0:0",
        IMAGE,
        "sh",
        "-c",
        "echo $A; pwd; id -u",
    ]);
    assert_eq!(out, "b\n/made\n0\n");
    let out = cli.imagectl(&[
        "run",
        "--rm",
        "--read-only",
        IMAGE,
        "sh",
        "-c",
        "echo x > /x",
    ]);
    assert_ne!(out.status.code(), Some(0));
    // The state and snapshots live next to the store.
    assert!(cli.tmp.path().join("containers/containers").is_dir());
    assert!(cli.tmp.path().join("snapshots/metadata.json").is_file());

    // A named container: changes, then commit, then run the committed image.
    cli.ok(&[
        "run",
        "--name",
        "c1",
        IMAGE,
        "sh",
        "-c",
        "echo data > /greeting; rm /etc/doomed",
    ]);
    let ps = cli.ok(&["ps"]);
    assert!(ps.contains("c1") && ps.contains("exited (0)"), "{ps}");
    let id = cli.ok(&[
        "commit",
        "-a",
        "tester",
        "-m",
        "from the test",
        "c1",
        COMMITTED,
    ]);
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(cli.ok(&["rm", "c1"]), "c1\n");
    let out = cli.ok(&[
        "run",
        "--rm",
        COMMITTED,
        "sh",
        "-c",
        "cat /greeting; ls /etc/doomed 2>/dev/null || echo gone",
    ]);
    assert_eq!(out, "data\ngone\n");
    let history = cli.ok(&["inspect", "--history", COMMITTED]);
    assert!(history.contains("from the test"), "{history}");

    // create, start (attached), kill on a running one, rm --force.
    let id = cli.ok(&["create", IMAGE, "sleep", "300"]);
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 64);
    let start = {
        let mut cmd = cli.command(&["start", &id[..12]]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.spawn().unwrap()
    };
    let deadline = Instant::now() + TIMEOUT;
    while !cli.ok(&["ps"]).contains("running") {
        assert!(Instant::now() < deadline, "never running");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cli.imagectl(&["rm", &id]);
    assert!(
        !out.status.success(),
        "rm of a running container without -f"
    );
    // sleep as pid 1 has no TERM handler, so TERM does nothing; KILL ends it.
    cli.ok(&["kill", "-s", "TERM", &id[..12]]);
    cli.ok(&["kill", &id[..12]]);
    let mut start = start;
    let status = loop {
        if let Some(s) = start.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "start did not return after kill");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(128 + 9));
    let ps = cli.ok(&["ps"]);
    assert!(ps.contains("exited (137)"), "{ps}");
    cli.ok(&["rm", "-f", &id]);
    assert_eq!(cli.ok(&["ps", "-q"]), "");

    // bundle + runc run of it.
    let bundle = cli.tmp.path().join("bundle");
    cli.ok(&[
        "bundle",
        COMMITTED,
        bundle.to_str().unwrap(),
        "cat",
        "/greeting",
    ]);
    assert!(bundle.join("config.json").is_file());
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    assert!(!bundle.join("rootfs/etc/doomed").exists());
    let runc_root = cli.tmp.path().join("runc-root");
    let mut cmd = Command::new("runc");
    cmd.arg("--root")
        .arg(&runc_root)
        .args(["run", "-b"])
        .arg(&bundle)
        .arg("cli-run-bundle-test");
    let out = run_bounded(cmd);
    assert!(
        out.status.success(),
        "runc run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "data\n");

    // crun, when present, runs the same image.
    if which("crun").is_some() {
        let out = cli.ok(&[
            "run",
            "--rm",
            "--runtime",
            "crun",
            COMMITTED,
            "cat",
            "/greeting",
        ]);
        assert_eq!(out, "data\n");
    } else {
        eprintln!("crun not installed: the crun run is skipped");
    }
    // The help documents where state lives.
    let help = cli.ok(&["run", "--help"]);
    assert!(help.contains("<store>/../containers") && help.contains("<store>/../snapshots"));
}

#[test]
fn imagectl_run_of_a_missing_image_fails_typed() {
    if !ready(&["runc"]) {
        return;
    }
    let cli = Cli::new(Cleanup::Containers);
    let out = cli.imagectl(&["run", "--rm", "test.local/absent:1", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not found") && err.contains("no such image: test.local/absent:1"),
        "{err}"
    );
}

/// Without CAP_SYS_ADMIN (root with it dropped from the bounding set, by
/// util-linux's setpriv), `run` says so up front: overlay is unavailable
/// (the copy driver is chosen, with a message), and the container is
/// refused as needing root before any layer is unpacked or any state is
/// written.
#[test]
fn imagectl_run_without_privilege_says_it_needs_root_and_makes_nothing() {
    if !ready(&["setpriv"]) {
        return;
    }
    let cli = Cli::new(Cleanup::Containers);
    let rootfs = cli.tmp.path().join("rootfs");
    image_rootfs(&rootfs);
    cli.append_shell_image(&rootfs, IMAGE);
    let imagectl = cli.command(&["run", "--rm", IMAGE, "echo", "hi"]);
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--bounding-set",
        "-sys_admin",
        "--inh-caps",
        "-sys_admin",
        "--",
    ])
    .arg(imagectl.get_program())
    .args(imagectl.get_args())
    .env_remove("IMAGECTL_STATE")
    .env_remove("IMAGECTL_SNAPSHOTS");
    let out = run_bounded(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("permission denied: creating a container needs root (CAP_SYS_ADMIN)"),
        "{err}"
    );
    assert!(
        err.contains("overlayfs is unavailable at") && err.contains("using the copy driver"),
        "{err}"
    );
    // Nothing made: no container, no snapshot of the image's layers (the
    // copy driver's root, chosen above, holds none).
    assert_eq!(cli.ok(&["ps", "-q"]), "");
    assert_eq!(
        cli.ok(&["snapshots", "--snapshotter", "copy", "--json"])
            .trim(),
        "[]"
    );
}
