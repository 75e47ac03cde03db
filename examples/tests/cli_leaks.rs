//! What a container leaves when its run goes wrong, end to end through
//! `imagectl`, as root: a `run --rm` that fails at start (a hostname
//! longer than the kernel takes, an image whose /etc/hosts is a directory
//! or whose /proc or /dev is a file, an environment too big for execve, a
//! volume whose target cannot be made) under the native backend, runc and
//! crun, must leave no mount, no container state, no active snapshot and no
//! cgroup; a `run` whose imagectl is killed with SIGKILL shows as stopped
//! in `ps` at once and is reclaimed by `rm` or by the next command's gc
//! (one run by runc, whose foreground run outlives it, shows running until
//! that gc kills it).
//! A missing tool or privilege skips loudly unless CI=true.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{container_rootfs, kill_group, ready, Cleanup, Cli, TIMEOUT};

const IMAGE: &str = "test.local/leaks:1";
const APPLETS: &[&str] = &["sh", "true", "sleep", "echo"];

/// Everything of containers that could leak, to compare before and after.
#[derive(Debug, PartialEq, Eq)]
struct Leftovers {
    /// Mount points below the test's directory.
    mounts: BTreeSet<String>,
    /// Container directories in the state directory.
    containers: BTreeSet<String>,
    /// Snapshots that are not committed (a container's, or its init).
    active_snapshots: BTreeSet<String>,
}

fn leftovers(cli: &Cli) -> Leftovers {
    let tmp = cli.tmp.path().to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&tmp))
        .map(str::to_owned)
        .collect();
    let state = cli.tmp.path().join("containers/containers");
    let containers = std::fs::read_dir(&state)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let active_snapshots = cli.active_snapshots().into_iter().collect();
    Leftovers {
        mounts,
        containers,
        active_snapshots,
    }
}

/// Asserts that no cgroup directory of container `id` exists.
fn assert_no_cgroups(id: &str) {
    let dirs = image_runtime::cgroup::container_dirs(id).unwrap_or_default();
    let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups of {id} left: {left:?}");
}

/// The image `tag`: IMAGE's root filesystem changed by `change`.
fn image_with(cli: &Cli, tag: &str, change: impl FnOnce(&std::path::Path)) {
    let rootfs = cli.tmp.path().join(tag.replace(['/', ':'], "_"));
    container_rootfs(&rootfs, APPLETS);
    change(&rootfs);
    cli.append_shell_image(&rootfs, tag);
}

/// IMAGE plus three configuration-only layers of ten 100 KB variables
/// each: 3 MB of environment, more than execve takes (2 MB with the
/// usual 8 MB stack), while each `append` stays under it.
fn huge_env_image(cli: &Cli, tag: &str) {
    let empty = cli.tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let value = "v".repeat(100_000);
    let mut base = IMAGE.to_owned();
    for round in 0..3 {
        let out = if round == 2 {
            tag.to_owned()
        } else {
            format!("test.local/env-{round}:1")
        };
        let mut args = vec![
            "append".to_owned(),
            "--base".to_owned(),
            base.clone(),
            "--rootfs".to_owned(),
            empty.to_string_lossy().into_owned(),
            "--tag".to_owned(),
            out.clone(),
        ];
        for i in 0..10 {
            args.push("--env".to_owned());
            args.push(format!("BIG_{round}_{i}={value}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli.ok(&args);
        base = out;
    }
}

#[test]
fn failed_run_rm_leaves_no_mount_state_snapshot_or_cgroup() {
    if !ready(&[]) {
        return;
    }
    let cli = Cli::new(Cleanup::ContainersAndCgroups).in_own_process_groups();
    let rootfs = cli.tmp.path().join("rootfs");
    container_rootfs(&rootfs, APPLETS);
    cli.append_shell_image(&rootfs, IMAGE);
    image_with(&cli, "test.local/hosts-dir:1", |r| {
        std::fs::create_dir_all(r.join("etc/hosts")).unwrap();
    });
    image_with(&cli, "test.local/proc-file:1", |r| {
        std::fs::remove_dir(r.join("proc")).unwrap();
        std::fs::write(r.join("proc"), "").unwrap();
    });
    image_with(&cli, "test.local/dev-file:1", |r| {
        std::fs::remove_dir(r.join("dev")).unwrap();
        std::fs::write(r.join("dev"), "").unwrap();
    });
    huge_env_image(&cli, "test.local/huge-env:1");
    let long_host = "h".repeat(300);
    let volume = format!("{}:/bin/busybox/x", rootfs.join("etc/passwd").display());
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("hostname", vec!["--hostname", &long_host, IMAGE]),
        ("hosts-dir", vec!["test.local/hosts-dir:1"]),
        ("proc-file", vec!["test.local/proc-file:1"]),
        ("dev-file", vec!["test.local/dev-file:1"]),
        ("e2big", vec!["test.local/huge-env:1"]),
        ("volume", vec!["-v", &volume, IMAGE]),
    ];
    let mut runtimes = vec!["native"];
    runtimes.extend(image_testsupport::tools::installed(&["runc", "crun"]));
    let before = leftovers(&cli);
    assert!(before.containers.is_empty() && before.active_snapshots.is_empty());
    for rt in &runtimes {
        for (case, args) in &cases {
            let name = format!("{rt}-{case}");
            let mut all = vec!["run", "--rm", "--runtime", rt, "--name", &name];
            all.extend(args.iter().copied());
            all.push("true");
            let err = cli.fails(&all);
            assert!(!err.contains("cleaning up failed"), "{name}: {err}");
            // What the state looks like right after, before any later
            // command's gc could tidy up.
            assert_eq!(leftovers(&cli), before, "{name} left something: {err}");
            assert_no_cgroups(&name);
        }
    }
    // The same failures without --rm keep the container, as Docker does,
    // and `rm` then removes all of it.
    cli.fails(&[
        "run",
        "--name",
        "kept",
        "--hostname",
        &long_host,
        IMAGE,
        "true",
    ]);
    let ps = cli.ok(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("kept ") && l.contains("created")),
        "{ps}"
    );
    cli.ok(&["rm", "kept"]);
    assert_eq!(leftovers(&cli), before);
    assert_no_cgroups("kept");
}

/// Starts `imagectl run` in the background (its own process group) and
/// waits until `ps` shows `name` running. The caller reaps the child
/// ([`kill_owner`]), hence the lint's exception.
#[allow(clippy::zombie_processes)]
fn spawn_run(cli: &Cli, args: &[&str], name: &str) -> std::process::Child {
    let mut cmd = cli.command(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn imagectl");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let ps = cli.ok(&["ps"]);
        if ps
            .lines()
            .any(|l| l.starts_with(&format!("{name} ")) && l.contains("running"))
        {
            return child;
        }
        if Instant::now() > deadline {
            kill_group(&mut child);
            let _ = child.wait();
            panic!("{name} never running: {ps}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills imagectl itself (not its group: the container must go because
/// its owner went) and reaps it.
fn kill_owner(child: &mut std::process::Child) {
    child.kill().expect("kill -9 imagectl");
    child.wait().expect("reap imagectl");
}

/// The STATUS column of container `name` in `ps`.
fn ps_status(cli: &Cli, name: &str) -> String {
    let ps = cli.ok(&["ps"]);
    let line = ps
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not listed: {ps}"));
    // CONTAINER ID (12), IMAGE (30), STATUS (14), each followed by two spaces.
    line.chars()
        .skip(44)
        .take(14)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Polls `f` until it gives a value, for at most [`TIMEOUT`].
fn poll<T>(mut f: impl FnMut() -> Option<T>, what: &str) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_owner_shows_stopped_at_once_and_is_reclaimed() {
    if !ready(&[]) {
        return;
    }
    let cli = Cli::new(Cleanup::ContainersAndCgroups).in_own_process_groups();
    let rootfs = cli.tmp.path().join("rootfs");
    container_rootfs(&rootfs, APPLETS);
    cli.append_shell_image(&rootfs, IMAGE);
    let before = leftovers(&cli);

    // A plain run: ps shows it stopped as soon as its owner is gone, and
    // `rm` (no --force needed: it does not run) removes all of it.
    let mut owner = spawn_run(&cli, &["run", "--name", "k", IMAGE, "sleep", "600"], "k");
    kill_owner(&mut owner);
    assert_eq!(ps_status(&cli, "k"), "stopped");
    let json: serde_json::Value = serde_json::from_str(&cli.ok(&["ps", "--json"])).unwrap();
    assert_eq!(json[0]["status"], "stopped", "{json}");
    cli.ok(&["rm", "k"]);
    assert_eq!(leftovers(&cli), before);
    assert_no_cgroups("k");

    // A run --rm killed before it could delete: the next runtime command
    // (here `ps` does not count; `rm` of another container does) collects it.
    let mut owner = spawn_run(
        &cli,
        &["run", "--rm", "--name", "r", IMAGE, "sleep", "600"],
        "r",
    );
    kill_owner(&mut owner);
    assert_eq!(ps_status(&cli, "r"), "stopped");
    cli.ok(&["create", "--name", "other", IMAGE, "true"]);
    let ps = cli.ok(&["ps", "-q"]);
    assert_eq!(ps.lines().collect::<Vec<_>>(), ["other"], "{ps}");
    assert_no_cgroups("r");
    cli.ok(&["rm", "other"]);
    assert_eq!(leftovers(&cli), before);

    // runc's foreground run outlives its killed owner: ps says so (its
    // init runs), and the next runc command's gc kills and removes it.
    if !image_testsupport::tools::have("runc") {
        return;
    }
    let args = [
        "run",
        "--runtime",
        "runc",
        "--name",
        "o",
        IMAGE,
        "sleep",
        "600",
    ];
    let mut owner = spawn_run(&cli, &args, "o");
    // runc writes the pid file just after the record says running.
    let pid_file = cli.tmp.path().join("containers/containers/o/init.pid");
    let init = poll(|| std::fs::read_to_string(&pid_file).ok(), "init.pid");
    let init = format!("/proc/{}/stat", init.trim());
    kill_owner(&mut owner);
    assert_eq!(ps_status(&cli, "o"), "running");
    // A native command leaves it to a runtime of its own backend.
    cli.ok(&["create", "--name", "other", IMAGE, "true"]);
    assert_eq!(ps_status(&cli, "o"), "running");
    cli.ok(&["rm", "other"]);
    cli.ok(&[
        "create",
        "--runtime",
        "runc",
        "--name",
        "other",
        IMAGE,
        "true",
    ]);
    let ps = cli.ok(&["ps", "-q"]);
    assert_eq!(ps.lines().collect::<Vec<_>>(), ["other"], "{ps}");
    // Killed: gone, or a zombie until its orphaned runc reaps it.
    poll(
        || match std::fs::read_to_string(&init) {
            Err(_) => Some(()),
            Ok(stat) => stat
                .rsplit_once(") ")
                .filter(|(_, s)| s.starts_with('Z'))
                .map(drop),
        },
        "the orphan's init killed",
    );
    assert_no_cgroups("o");
    cli.ok(&["rm", "other"]);
    assert_eq!(leftovers(&cli), before);
}
