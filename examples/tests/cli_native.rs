//! `imagectl run` with the native backend (the default) end to end, as
//! root, on an image appended in the test from a busybox-static root
//! filesystem: output and exit codes, `--memory`, `--pids`, `--cpus`,
//! `--net none|host`, `--init`, `-t`, typed refusals, and `imagectl exec`
//! into a container run by another `imagectl` process (native, and runc
//! when installed). A missing tool or privilege skips a test loudly unless
//! CI=true. Every container is removed (cgroups and mounts with it) and
//! every background process group killed.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{container_rootfs, kill_group, ready, which, Cleanup, Cli, TIMEOUT};

const IMAGE: &str = "test.local/cli-native:1";
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "sleep", "hostname", "id", "dd", "seq", "head", "tr", "true",
];

/// A store holding IMAGE, busybox-static, whose imagectl runs are each in
/// a process group of their own. On drop, background runs are killed and
/// every container removed; then nothing may stay mounted and no cgroup of
/// ours be left.
fn native_cli() -> Cli {
    let cli = Cli::new(Cleanup::ContainersAndCgroups).in_own_process_groups();
    let rootfs = cli.tmp.path().join("rootfs");
    container_rootfs(&rootfs, APPLETS);
    cli.append_shell_image(&rootfs, IMAGE);
    cli
}

/// Interface names of a `/proc/net/dev` text.
fn interfaces(text: &str) -> BTreeSet<String> {
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_owned()))
        .collect()
}

#[test]
fn imagectl_run_native_limits_network_init_tty() {
    if !ready(&[]) {
        return;
    }
    let cli = native_cli();

    // Native is the default; output and exit codes pass through.
    assert_eq!(cli.ok(&["run", "--rm", IMAGE, "echo", "hi"]), "hi\n");
    let out = cli.imagectl(&["run", "--rm", IMAGE, "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    cli.ok(&["run", "--name", "n1", IMAGE, "true"]);
    let ps = cli.ok(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("n1 ") && l.contains("native")),
        "{ps}"
    );
    cli.ok(&["rm", "n1"]);

    // --memory: 64 MB really allocated (a shell variable) is killed under
    // 16m (128 + SIGKILL) and works without the limit.
    let alloc = "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo ${#x}";
    let out = cli.imagectl(&["run", "--rm", "--memory", "16m", IMAGE, "sh", "-c", alloc]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        cli.ok(&["run", "--rm", IMAGE, "sh", "-c", alloc]),
        "64000000\n"
    );
    // The limits as the container's cgroups show them.
    let out = cli.ok(&[
        "run",
        "--rm",
        "--memory",
        "16m",
        "--pids",
        "10",
        "--cpus",
        "0.5",
        IMAGE,
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes \
         /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us \
         /sys/fs/cgroup/cpu/cpu.cfs_period_us",
    ]);
    assert_eq!(out, format!("{}\n10\n50000\n100000\n", 16 << 20));

    // --pids 10: a fork bomb never gets past 10 processes (the inner shell
    // stops at its first failed fork; the outer one counts with builtins).
    let out = cli.ok(&[
        "run",
        "--rm",
        "--pids",
        "10",
        IMAGE,
        "sh",
        "-c",
        "sh -c 'for i in $(seq 1 60); do sleep 30 & done' 2>/dev/null; \
         set -- /proc/[0-9]*; echo $#",
    ]);
    let n: u32 = out.trim().parse().unwrap_or(999);
    assert!((5..=10).contains(&n), "{n} processes under pids.max 10");

    // --net none (the default): loopback only; --net host: the host's.
    let none = cli.ok(&["run", "--rm", IMAGE, "cat", "/proc/net/dev"]);
    assert_eq!(interfaces(&none), BTreeSet::from(["lo".to_owned()]));
    let none = cli.ok(&[
        "run",
        "--rm",
        "--net",
        "none",
        IMAGE,
        "cat",
        "/proc/net/dev",
    ]);
    assert_eq!(interfaces(&none), BTreeSet::from(["lo".to_owned()]));
    let host = cli.ok(&[
        "run",
        "--rm",
        "--net",
        "host",
        IMAGE,
        "cat",
        "/proc/net/dev",
    ]);
    let ours = interfaces(&std::fs::read_to_string("/proc/self/net/dev").unwrap());
    assert_eq!(interfaces(&host), ours);

    // --init: the command is pid 2 under the reaper; without it, pid 1.
    assert_eq!(
        cli.ok(&["run", "--rm", "--init", IMAGE, "sh", "-c", "echo $$"]),
        "2\n"
    );
    assert_eq!(
        cli.ok(&["run", "--rm", IMAGE, "sh", "-c", "echo $$"]),
        "1\n"
    );

    // -t: the process's stdout is a terminal (whose output is ours).
    let out = cli.ok(&[
        "run",
        "--rm",
        "-t",
        IMAGE,
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo tty",
    ]);
    assert_eq!(out.replace('\r', ""), "tty\n");
    // -i: stdin reaches the process.
    let mut cmd = cli.command(&["run", "--rm", "-i", IMAGE, "cat"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"from stdin\n").unwrap();
    }
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            kill_group(&mut child);
            panic!("run -i cat did not end at end of input");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from stdin\n");

    // Typed refusals, before anything runs.
    let err = cli.fails(&["run", "--rm", "--memory", "1m", IMAGE, "true"]);
    assert!(
        err.contains("invalid input") && err.contains("minimum is 6 MiB"),
        "{err}"
    );
    let err = cli.fails(&["run", "--rm", "--memory", "12x", IMAGE, "true"]);
    assert!(err.contains("invalid memory"), "{err}");
    let err = cli.fails(&["run", "--rm", "--cpus", "0", IMAGE, "true"]);
    assert!(err.contains("invalid cpus"), "{err}");
    let err = cli.fails(&["run", "--rm", "--net", "bridge", IMAGE, "true"]);
    assert!(err.contains("expected none or host"), "{err}");
    if which("runc").is_some() {
        // runc gets the same spec: the same limits and network.
        let out = cli.ok(&[
            "run",
            "--rm",
            "--runtime",
            "runc",
            "--memory",
            "16m",
            "--pids",
            "10",
            "--cpus",
            "0.5",
            IMAGE,
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes \
             /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        ]);
        assert_eq!(out, format!("{}\n10\n50000\n", 16 << 20));
        let out = cli.imagectl(&[
            "run",
            "--rm",
            "--runtime",
            "runc",
            "--memory",
            "16m",
            IMAGE,
            "sh",
            "-c",
            alloc,
        ]);
        assert_eq!(out.status.code(), Some(137));
        let host = cli.ok(&[
            "run",
            "--rm",
            "--runtime",
            "runc",
            "--net",
            "host",
            IMAGE,
            "cat",
            "/proc/net/dev",
        ]);
        assert_eq!(interfaces(&host), ours);
        let err = cli.fails(&["run", "--rm", "--runtime", "runc", "--init", IMAGE, "true"]);
        assert!(
            err.contains("unsupported") && err.contains("init process"),
            "{err}"
        );
    }
    assert_eq!(cli.ok(&["ps", "-q"]), "", "a refused run left a container");

    // The help documents the flags and the default backend.
    let help = cli.ok(&["run", "--help"]);
    for word in [
        "--memory", "--pids", "--cpus", "--net", "--init", "--tty", "native",
    ] {
        assert!(help.contains(word), "{word} not in run --help");
    }
}

#[test]
fn imagectl_exec_into_running_containers() {
    if !ready(&[]) {
        return;
    }
    let mut cli = native_cli();

    // Native: `run` stays attached in another process; exec joins it.
    cli.spawn(&["run", "--name", "x", IMAGE, "sleep", "30"]);
    cli.wait_running("x");
    assert_eq!(cli.ok(&["exec", "x", "cat", "/etc/hostname"]), "x\n");
    let out = cli.imagectl(&[
        "exec",
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "x",
        "sh",
        "-c",
        "echo $A $(pwd); cat /proc/1/comm; exit 5",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 /tmp\nsleep\n");
    assert_eq!(out.status.code(), Some(5));
    let out = cli.ok(&["exec", "-t", "x", "sh", "-c", "test -t 1 && echo tty"]);
    assert_eq!(out.replace('\r', ""), "tty\n");
    // Its writes are the container's: visible to its own processes.
    cli.ok(&["exec", "x", "sh", "-c", "echo mark > /tmp/m"]);
    assert_eq!(cli.ok(&["exec", "x", "cat", "/tmp/m"]), "mark\n");
    cli.ok(&["rm", "-f", "x"]);
    let err = cli.fails(&["exec", "x", "true"]);
    assert!(err.contains("no such container"), "{err}");

    // runc: the same through `runc exec`.
    if which("runc").is_some() {
        cli.spawn(&[
            "run",
            "--runtime",
            "runc",
            "--name",
            "r",
            IMAGE,
            "sleep",
            "30",
        ]);
        cli.wait_running("r");
        assert_eq!(cli.ok(&["exec", "r", "cat", "/etc/hostname"]), "r\n");
        let out = cli.imagectl(&["exec", "r", "sh", "-c", "exit 6"]);
        assert_eq!(out.status.code(), Some(6));
        let err = cli.fails(&["exec", "-t", "r", "true"]);
        assert!(err.contains("unsupported"), "{err}");
        cli.ok(&["rm", "-f", "r"]);
    } else {
        eprintln!("runc not installed: runc exec is skipped");
    }

    // A stopped container refuses exec (typed: failed precondition).
    cli.ok(&["run", "--name", "s", IMAGE, "true"]);
    let err = cli.fails(&["exec", "s", "true"]);
    assert!(
        err.contains("failed precondition") && err.contains("cannot exec"),
        "{err}"
    );
}
