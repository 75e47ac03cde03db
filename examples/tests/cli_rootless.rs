//! Rootless imagectl end to end: a test user with subordinate id ranges
//! (made here, removed by a guard even when the test fails) loads the
//! busybox test image, unpacks it, runs containers, commits one, as podman's
//! rootless tests do. The user's commands run in a user namespace where it
//! is root and inside ids 1.. are its subordinate ids, so ownership is
//! checked from the host: an image file owned by 0 is the user's, one owned
//! by 1000 is `start + 999`. Needs root (to make the user), newuidmap and
//! newgidmap (the uidmap package): missing, a loud skip, a failure under
//! CI=true.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{container_rootfs, ready, run_bounded, which, Cleanup, Cli};

const IMAGE: &str = "test.local/rootless-busybox:1";
const COMMITTED: &str = "test.local/rootless-busybox:committed";
const APPLETS: &[&str] = &["sh", "echo", "cat", "id", "touch", "ls", "sleep"];

/// A user made for one test, with a home in the test's directory and
/// subordinate ranges; `userdel` and the removal of its `/etc/subuid` and
/// `/etc/subgid` lines on drop.
struct TestUser {
    name: String,
    uid: u32,
    home: PathBuf,
    /// The first of its subordinate uids and gids.
    sub_start: (u32, u32),
}

impl TestUser {
    fn create(dir: &Path) -> TestUser {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        let name = format!("imgrl{}x{}", std::process::id(), nanos % 100_000);
        let home = dir.join("home");
        let out = run_bounded({
            let mut c = Command::new("useradd");
            c.args(["-M", "-s", "/bin/sh", "-d"]).arg(&home).arg(&name);
            c
        });
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // From here on the guard removes the user.
        let mut user = TestUser {
            name,
            uid: 0,
            home,
            sub_start: (0, 0),
        };
        let id = run_bounded({
            let mut c = Command::new("id");
            c.args(["-u", &user.name]);
            c
        });
        user.uid = String::from_utf8_lossy(&id.stdout)
            .trim()
            .parse()
            .expect("uid");
        // useradd gives ranges where login.defs says so; else add them.
        user.sub_start = (
            user.ensure_range(Path::new("/etc/subuid")),
            user.ensure_range(Path::new("/etc/subgid")),
        );
        std::fs::create_dir(&user.home).expect("home");
        std::os::unix::fs::chown(&user.home, Some(user.uid), Some(user.uid)).expect("chown home");
        user
    }

    /// The start of the user's range in `file`, added (above every range
    /// there) when it has none.
    fn ensure_range(&self, file: &Path) -> u32 {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let mine = |l: &&str| l.split(':').next() == Some(self.name.as_str());
        if let Some(l) = text.lines().find(mine) {
            return l
                .split(':')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("start");
        }
        let top = text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                Some(f.get(1)?.parse::<u64>().ok()? + f.get(2)?.parse::<u64>().ok()?)
            })
            .max()
            .unwrap_or(100_000)
            .max(100_000);
        let start = u32::try_from(top).expect("room for a range");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(file)
            .expect("open subordinate ids");
        std::io::Write::write_all(&mut f, format!("{}:{start}:65536\n", self.name).as_bytes())
            .expect("append range");
        start
    }

    /// `imagectl args` run as the user (runuser), with a clean environment
    /// whose HOME is the user's: the store, snapshots and state are the
    /// defaults under ~/.local/share/imagectl.
    fn imagectl(&self, args: &[&str]) -> Output {
        self.imagectl_env(args, &[])
    }

    /// As [`TestUser::imagectl`], with `env` added to the environment.
    fn imagectl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(which("runuser").expect("runuser"));
        c.args(["-u", &self.name, "--"])
            .arg(env!("CARGO_BIN_EXE_imagectl"))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", &self.home)
            .envs(env.iter().copied())
            .current_dir(&self.home);
        run_bounded(c)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.imagectl(args);
        assert!(
            out.status.success(),
            "imagectl {args:?} as {}: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // Its pause process and whatever else its commands left running
        // (userdel refuses a user with processes).
        // Killed processes take a moment to exit: until they have, userdel
        // refuses.
        for _ in 0..100 {
            let left = processes_of(self.uid);
            if left.is_empty() {
                break;
            }
            for pid in left {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = run_bounded({
            let mut c = Command::new("userdel");
            c.arg(&self.name);
            c
        });
        for file in ["/etc/subuid", "/etc/subgid"] {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            let prefix = format!("{}:", self.name);
            if text.lines().any(|l| l.starts_with(&prefix)) {
                let kept: String = text
                    .lines()
                    .filter(|l| !l.starts_with(&prefix))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let _ = std::fs::write(file, kept);
            }
        }
    }
}

/// The pids of the processes whose real uid is `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
        // A zombie has exited already.
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'));
        if real == Some(uid) && !zombie {
            out.push(pid);
        }
    }
    out
}

fn owner(p: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid())
}

/// The busybox test image, made by root with a file owned by 1000:1000,
/// saved as a `docker save` archive the test user can read.
fn image_archive(cli: &Cli) -> PathBuf {
    let rootfs = cli.tmp.path().join("rootfs");
    container_rootfs(&rootfs, APPLETS);
    std::fs::create_dir(rootfs.join("data")).expect("data");
    std::fs::write(rootfs.join("etc/doomed"), "to be deleted\n").expect("write");
    std::fs::write(rootfs.join("data/owned-by-1000"), "x\n").expect("write");
    std::os::unix::fs::chown(rootfs.join("data/owned-by-1000"), Some(1000), Some(1000))
        .expect("chown");
    cli.append_shell_image(&rootfs, IMAGE);
    let archive = cli.tmp.path().join("image.tar");
    cli.ok(&["save", "-o", archive.to_str().expect("utf8"), IMAGE]);
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    archive
}

/// The tools checked (a loud skip, or a failure under CI, when missing),
/// the test's directory open to the user (its home is below), the image
/// archive and the test user; `None` when skipped.
fn set_up() -> Option<(Cli, PathBuf, TestUser)> {
    if !ready(&["newuidmap", "newgidmap", "useradd", "userdel", "runuser"]) {
        return None;
    }
    let cli = Cli::new(Cleanup::Containers);
    std::fs::set_permissions(cli.tmp.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod tmp");
    let archive = image_archive(&cli);
    let user = TestUser::create(cli.tmp.path());
    Some((cli, archive, user))
}

#[test]
fn an_unprivileged_user_loads_unpacks_runs_and_commits() {
    let Some((cli, archive, user)) = set_up() else {
        return;
    };
    let (sub_uid, sub_gid) = user.sub_start;

    // The command runs as root of the user's namespace, mapped as said.
    let uid_map = user.ok(&["unshare", "--", "cat", "/proc/self/uid_map"]);
    let lines: Vec<Vec<String>> = uid_map
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(
        lines,
        vec![
            vec!["0".to_owned(), user.uid.to_string(), "1".to_owned()],
            vec!["1".to_owned(), sub_uid.to_string(), "65536".to_owned()],
        ],
        "{uid_map}"
    );

    // load into the default store, under the user's home.
    user.ok(&["load", "-q", archive.to_str().expect("utf8")]);
    let data = user.home.join(".local/share/imagectl");
    assert!(data.join("store/index.json").is_file());
    assert_eq!(owner(&data.join("store/index.json")), (user.uid, user.uid));

    // mount lives in a command's mount namespace: refused on its own,
    // usable inside `unshare`.
    let mnt = user.home.join("mnt");
    let mnt_s = mnt.to_str().expect("utf8");
    let refused = user.imagectl(&["mount", IMAGE, mnt_s]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only inside `imagectl unshare`"));
    let script = format!("\"$0\" mount {IMAGE} {mnt_s} >/dev/null && cat {mnt_s}/etc/doomed && \"$0\" umount {mnt_s} >/dev/null");
    assert_eq!(
        user.ok(&[
            "unshare",
            "--",
            "sh",
            "-c",
            &script,
            env!("CARGO_BIN_EXE_imagectl")
        ]),
        "to be deleted\n"
    );

    // unpack: owners in the image are kept through the mapping.
    let out = user.home.join("unpacked");
    user.ok(&["unpack", IMAGE, out.to_str().expect("utf8")]);
    assert_eq!(owner(&out.join("bin/busybox")), (user.uid, user.uid));
    assert_eq!(
        owner(&out.join("data/owned-by-1000")),
        (sub_uid + 999, sub_gid + 999)
    );

    // run: root inside; what it creates is the user's, or mapped.
    let run = user.imagectl(&["run", "--rm", IMAGE, "id", "-u"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&run.stdout), "0\n");
    assert!(
        !stderr.contains("copy driver"),
        "overlay expected: {stderr}"
    );
    let vol = user.home.join("vol");
    std::fs::create_dir(&vol).expect("vol");
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let bind = format!("{}:/out", vol.display());
    user.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        IMAGE,
        "sh",
        "-c",
        "touch /out/by-root && touch /out/by-1000 && chown 1000:1000 /out/by-1000",
    ]);
    assert_eq!(owner(&vol.join("by-root")), (user.uid, user.uid));
    assert_eq!(owner(&vol.join("by-1000")), (sub_uid + 999, sub_gid + 999));

    // commit: a container's changes (a new file, a deletion: a whiteout in
    // the user.overlay form) become an image the user runs.
    let changes = "echo data > /greeting && rm /etc/doomed";
    user.ok(&["run", "--name", "c1", IMAGE, "sh", "-c", changes]);
    user.ok(&["commit", "c1", COMMITTED]);
    assert_eq!(
        user.ok(&[
            "run",
            "--rm",
            COMMITTED,
            "sh",
            "-c",
            "cat /greeting; ls /etc/doomed 2>&1 || echo gone"
        ]),
        "data\nls: /etc/doomed: No such file or directory\ngone\n"
    );
    user.ok(&["rm", "c1"]);

    // build: RUN steps run in containers in the same namespace.
    let ctx = user.home.join("ctx");
    std::fs::create_dir(&ctx).expect("ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {IMAGE}\nRUN id -u > /who\n"),
    )
    .expect("Dockerfile");
    std::fs::set_permissions(&ctx, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    user.ok(&[
        "build",
        "-q",
        "-t",
        "test.local/rootless-built:1",
        ctx.to_str().expect("utf8"),
    ]);
    assert_eq!(
        user.ok(&["run", "--rm", "test.local/rootless-built:1", "cat", "/who"]),
        "0\n"
    );

    // Limits need a delegated cgroup, which this host does not give: each
    // is refused, naming why, under every backend.
    // runc and crun where installed (missing: loud skip, failure in CI).
    let oci: Vec<&str> = ["runc", "crun"]
        .into_iter()
        .filter(|r| {
            let found = which(r).is_some();
            if !found {
                image_testsupport::tools::skip_or_fail(r);
            }
            found
        })
        .collect();
    for runtime in std::iter::once("native").chain(oci.iter().copied()) {
        for limit in [["--memory", "64m"], ["--pids-limit", "10"], ["--cpus", "1"]] {
            let mut args = vec!["run", "--rm", "--runtime", runtime];
            args.extend(limit);
            args.extend([IMAGE, "id"]);
            let limited = user.imagectl(&args);
            let stderr = String::from_utf8_lossy(&limited.stderr);
            assert!(!limited.status.success(), "{args:?}");
            assert!(
                stderr.contains("unsupported:") && stderr.contains("is not delegated to this user"),
                "{args:?}: {stderr}"
            );
        }
    }

    // runc and crun run our bundles rootless too: in the user's namespace
    // they are root, and with no cgroupsPath they keep the container in
    // their own cgroup, as they do rootless.
    for runtime in &oci {
        let script = format!("id -u; touch /out/by-{runtime}");
        let out = user.ok(&[
            "run",
            "--rm",
            "--runtime",
            runtime,
            "-v",
            &bind,
            IMAGE,
            "sh",
            "-c",
            &script,
        ]);
        assert_eq!(out, "0\n", "{runtime}");
        assert_eq!(
            owner(&vol.join(format!("by-{runtime}"))),
            (user.uid, user.uid)
        );
    }
    assert_eq!(user.ok(&["ps", "-q"]), "");
    // Nothing the user's commands mounted is left on the host.
    assert_eq!(cli.mounted(), Vec::<PathBuf>::new());
}

/// The pause process recorded in the user's data directory (no runtime
/// directory in a `runuser` session): its pid.
fn pause_pid(user: &TestUser) -> u32 {
    let path = user.home.join(".local/share/imagectl/pause.pid");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("pause.pid")).expect("json");
    u32::try_from(record["pid"].as_u64().expect("pid")).expect("pid")
}

/// Whether the process `pid` has exited: gone, or a zombie its parent
/// has not reaped yet.
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        matches!(state, Some('Z' | 'X'))
    })
}

/// The observed status of the container `name` in `ps --json`, or `None`
/// when there is none.
fn ps_status(user: &TestUser, name: &str) -> Option<String> {
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&user.ok(&["ps", "--json"])).expect("ps json");
    all.iter()
        .find(|r| r["id"] == name)
        .map(|r| r["status"].as_str().expect("status").to_owned())
}

/// Polls `f` for up to two minutes.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "waited for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn rootless_commands_share_one_pause_process_and_its_detached_containers() {
    let Some((cli, archive, user)) = set_up() else {
        return;
    };
    let archive = archive.to_str().expect("utf8");

    // Two commands at once start one pause process, which outlives both:
    // once they are done it is the user's only process.
    std::thread::scope(|s| {
        let a = s.spawn(|| user.ok(&["load", "-q", archive]));
        let b = s.spawn(|| user.ok(&["images"]));
        a.join().expect("load");
        b.join().expect("images");
    });
    let pause = pause_pid(&user);
    assert_eq!(processes_of(user.uid), vec![pause]);
    // `unshare` runs in that same namespace.
    let pause_ns = std::fs::read_link(format!("/proc/{pause}/ns/user")).expect("pause's ns");
    let ns = user.ok(&["unshare", "--", "readlink", "/proc/self/ns/user"]);
    assert_eq!(ns.trim_end(), pause_ns.to_str().expect("utf8"));
    // A runtime directory of another user's (as `su` can leave) is not
    // used: the same pause process is joined.
    let out = user.imagectl_env(
        &["unshare", "--", "readlink", "/proc/self/ns/user"],
        &[("XDG_RUNTIME_DIR", "/root")],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        pause_ns.to_str().expect("utf8"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // run -d, then ps, logs, exec and stop, each a command of its own.
    let script = "echo hello; trap 'echo term; exit 0' TERM; while true; do sleep 0.1; done";
    user.ok(&["run", "-d", "--name", "d1", IMAGE, "sh", "-c", script]);
    assert_eq!(ps_status(&user, "d1").as_deref(), Some("running"));
    eventually("hello in the log", || {
        user.ok(&["logs", "d1"]).contains("hello").then_some(())
    });
    assert_eq!(
        user.ok(&["exec", "d1", "cat", "/etc/doomed"]),
        "to be deleted\n"
    );
    assert_eq!(
        user.ok(&["exec", "d1", "sh", "-c", "echo from-exec > /proc/1/fd/1"]),
        ""
    );
    eventually("exec's line in the log", || {
        user.ok(&["logs", "d1"]).contains("from-exec").then_some(())
    });
    assert_eq!(user.ok(&["stop", "-t", "30", "d1"]), "d1\n");
    assert_eq!(ps_status(&user, "d1").as_deref(), Some("stopped"));
    assert!(user.ok(&["logs", "d1"]).ends_with("term\n"));
    user.ok(&["rm", "d1"]);
    assert_eq!(pause_pid(&user), pause, "the pause process was replaced");
    assert_eq!(processes_of(user.uid), vec![pause]);

    // A killed pause process is replaced by the next command; the
    // containers of its namespace are stale: unknown, then collected.
    user.ok(&["run", "-d", "--name", "d2", IMAGE, "sh", "-c", script]);
    eventually("hello in d2's log", || {
        user.ok(&["logs", "d2"]).contains("hello").then_some(())
    });
    assert!(Command::new("kill")
        .args(["-KILL", &pause.to_string()])
        .status()
        .expect("kill")
        .success());
    // The signal is sent, not yet acted on: a command that came first
    // would join the dying process's namespaces and replace nothing.
    eventually("the pause process to exit", || exited(pause).then_some(()));
    // The first command after the kill replaces it and kills what was
    // left in its namespaces (the monitor: exited, it is gone for `ps`
    // whether or not init has reaped it yet).
    user.ok(&["ps", "-q"]);
    let replaced = pause_pid(&user);
    eventually("ps to say unknown", || {
        (ps_status(&user, "d2").as_deref() == Some("unknown")).then_some(())
    });
    assert_ne!(replaced, pause);
    // Any command that opens the runtime collects it.
    assert_eq!(user.ok(&["run", "--rm", IMAGE, "echo", "ok"]), "ok\n");
    assert_eq!(ps_status(&user, "d2"), None);
    assert_eq!(user.ok(&["ps", "-q"]), "");
    let snapshots = user.ok(&["snapshots"]);
    assert!(
        snapshots
            .lines()
            .skip(1)
            .all(|l| l.starts_with("committed")),
        "{snapshots}"
    );
    // Only the new pause process is left, and nothing is mounted on the host.
    assert_eq!(processes_of(user.uid), vec![replaced]);
    assert_eq!(cli.mounted(), Vec::<PathBuf>::new());
}

/// A snapshot root made rootless keeps overlayfs' marks in `user.overlay.*`
/// xattrs; root using it later mounts it the same way (`userxattr`
/// recorded in the root), so an opaque directory stays opaque.
#[test]
fn a_snapshot_root_made_rootless_is_mounted_with_userxattr_by_root() {
    let Some((cli, archive, user)) = set_up() else {
        return;
    };
    user.ok(&["load", "-q", archive.to_str().expect("utf8")]);
    // The second step makes /d opaque in its layer.
    let ctx = user.home.join("ctx");
    std::fs::create_dir(&ctx).expect("ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {IMAGE}\nRUN mkdir /d && touch /d/a\nRUN rm -r /d && mkdir /d && touch /d/b\n"
        ),
    )
    .expect("Dockerfile");
    std::fs::set_permissions(&ctx, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let built = "test.local/rootless-opaque:1";
    user.ok(&["build", "-q", "-t", built, ctx.to_str().expect("utf8")]);
    assert_eq!(user.ok(&["run", "--rm", built, "ls", "/d"]), "b\n");
    let data = user.home.join(".local/share/imagectl");
    assert!(data.join("snapshots/userxattr").is_file());

    // Root, on the same store and snapshots (its own container state).
    let out = run_bounded({
        let mut c = Command::new(env!("CARGO_BIN_EXE_imagectl"));
        c.arg("--store")
            .arg(data.join("store"))
            .args(["run", "--rm", "--snapshots"])
            .arg(data.join("snapshots"))
            .arg("--state")
            .arg(cli.tmp.path().join("root-state"))
            .args([built, "ls", "/d"]);
        c
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "b\n");
}
