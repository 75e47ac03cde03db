//! Detached containers end to end through `imagectl`, as root: `run -d`
//! returns at once with the ID, `ps` shows the container running and then
//! exited with its code, `logs` (-t, --tail), `wait`, `stop`, `start -d`,
//! `restart` and `attach`, under the native backend, runc and crun; a
//! monitor killed with SIGKILL leaves a container `ps` calls unknown that
//! `rm -f` removes with its mounts, cgroups and snapshot; a simulated
//! reboot is reconciled by the next command. A missing tool or privilege
//! skips loudly unless CI=true.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Cleanup, Cli};
use image_testsupport::process::eventually;

const IMAGE: &str = "test.local/detached:1";
const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "test", "[", "touch", "true", "cat", "stty",
];

/// A Cli with IMAGE, or `None` (skipped loudly) when containers cannot run.
fn cli() -> Option<Cli> {
    if !common::ready(&[]) {
        return None;
    }
    let cli = Cli::new(Cleanup::ContainersAndCgroups);
    let rootfs = cli.tmp.path().join("rootfs");
    common::container_rootfs(&rootfs, APPLETS);
    cli.append_shell_image(&rootfs, IMAGE);
    Some(cli)
}

fn runtimes() -> Vec<&'static str> {
    let mut v = vec!["native"];
    v.extend(image_testsupport::tools::installed(&["runc", "crun"]));
    if v.len() < 3 {
        image_testsupport::tools::skip_or_fail("runc or crun (detached under them)");
    }
    v
}

/// `run -d` of `script` (with `sh -c`) as container `name` under `rt`,
/// `extra` options before the image; waits until `ps` shows it running.
fn run_d(cli: &Cli, rt: &str, name: &str, extra: &[&str], script: &str) {
    let mut args = vec!["run", "-d", "--runtime", rt, "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
    assert_eq!(cli.ok(&args), format!("{name}\n"));
    cli.wait_running(name);
}

/// The `ps` line of container `name`.
fn ps_line(cli: &Cli, name: &str) -> String {
    cli.ok(&["ps", "-a"])
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_default()
        .to_owned()
}

/// The record of `name`, as `ps --json` shows it.
fn record(cli: &Cli, name: &str) -> serde_json::Value {
    let all: Vec<serde_json::Value> = serde_json::from_str(&cli.ok(&["ps", "--json"])).unwrap();
    all.into_iter().find(|r| r["id"] == name).unwrap()
}

fn kill9(pid: u64) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
}

fn monitor_pid(cli: &Cli, name: &str) -> u64 {
    record(cli, name)["owner"]["pid"].as_u64().unwrap()
}

const SERVICE: &str =
    "trap 'echo term; exit 7' TERM; echo hello; echo oops >&2; while true; do sleep 0.1; done";

#[test]
fn run_d_ps_logs_wait_stop_start_restart_attach_under_each_runtime() {
    let Some(cli) = cli() else { return };
    let sync = cli.tmp.path().join("sync");
    std::fs::create_dir_all(&sync).unwrap();
    for rt in runtimes() {
        let name = format!("{rt}-d");
        run_d(&cli, rt, &name, &[], SERVICE);
        eventually("hello in the log", || {
            cli.ok(&["logs", &name]).contains("hello").then_some(())
        });
        let out = cli.imagectl(&["logs", &name]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n", "{rt}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n", "{rt}");
        assert_eq!(cli.ok(&["stop", "-t", "30", &name]), format!("{name}\n"));
        assert_eq!(cli.ok(&["wait", &name]), "7\n", "{rt}");
        assert!(ps_line(&cli, &name).contains("exited (7)"), "{rt}");
        assert_eq!(cli.ok(&["logs", "--tail", "1", &name]), "term\n", "{rt}");
        let stamped = cli.ok(&["logs", "-t", &name]);
        assert!(
            stamped
                .lines()
                .all(|l| l.starts_with("20") && l.contains("Z ")),
            "{rt}: {stamped}"
        );
        assert_eq!(cli.ok(&["logs", "--since", "1h", &name]), "hello\nterm\n");
        assert_eq!(cli.ok(&["logs", "--since", "4000000000", &name]), "");

        // Started again without attaching, then restarted; each run is
        // stopped only once it said hello (its TERM trap is set).
        let hellos = |n: usize| {
            eventually("the run's hello", || {
                (cli.ok(&["logs", &name]).matches("hello").count() == n).then_some(())
            })
        };
        assert_eq!(cli.ok(&["start", "-d", &name]), format!("{name}\n"));
        cli.wait_running(&name);
        hellos(2);
        assert_eq!(cli.ok(&["restart", "-t", "30", &name]), format!("{name}\n"));
        cli.wait_running(&name);
        hellos(3);
        cli.ok(&["stop", "-t", "30", &name]);
        assert_eq!(cli.ok(&["logs", &name]).matches("term").count(), 3, "{rt}");
        cli.ok(&["rm", &name]);

        // attach follows the output until the exit, with its code.
        let go = sync.join(format!("{rt}-go"));
        let waiter = format!("while [ ! -e /sync/{rt}-go ]; do sleep 0.1; done; echo bye; exit 3");
        let volume = format!("{}:/sync", sync.display());
        let name = format!("{rt}-a");
        run_d(&cli, rt, &name, &["-v", &volume], &waiter);
        let attach = cli
            .command(&["attach", &name])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Let attach reach the log before the line is written.
        std::thread::sleep(Duration::from_secs(2));
        std::fs::write(&go, "").unwrap();
        let out = attach.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{rt}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "bye\n", "{rt}");
        cli.ok(&["rm", &name]);
    }
}

/// Leftovers of the test's containers: mount points below its directory,
/// active snapshots, container directories.
fn assert_nothing_left(cli: &Cli, id: &str) {
    assert!(cli.mounted().is_empty(), "mounted: {:?}", cli.mounted());
    let active = cli.active_snapshots();
    assert!(active.is_empty(), "active snapshots: {active:?}");
    assert!(!cli
        .tmp
        .path()
        .join("containers/containers")
        .join(id)
        .exists());
    let dirs = image_runtime::cgroup::container_dirs(id).unwrap_or_default();
    let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups of {id} left: {left:?}");
}

#[test]
fn a_killed_monitor_is_unknown_and_rm_f_cleans_up() {
    let Some(cli) = cli() else { return };
    for rt in runtimes() {
        let name = format!("{rt}-k");
        run_d(&cli, rt, &name, &[], SERVICE);
        kill9(monitor_pid(&cli, &name));
        eventually("ps to say unknown", || {
            ps_line(&cli, &name).contains("unknown").then_some(())
        });
        let err = cli.fails(&["rm", &name]);
        assert!(err.contains("--force"), "{err}");
        cli.ok(&["rm", "-f", &name]);
        assert_nothing_left(&cli, &name);
    }
}

#[test]
fn a_reboot_is_reconciled_by_the_next_command() {
    let Some(cli) = cli() else { return };
    let name = "rebooted";
    run_d(&cli, "native", name, &[], SERVICE);
    eventually("hello in the log", || {
        cli.ok(&["logs", name]).contains("hello").then_some(())
    });
    // The reboot: monitor and process gone, mounts gone, another boot ID.
    kill9(monitor_pid(&cli, name));
    eventually("ps to say unknown", || {
        ps_line(&cli, name).contains("unknown").then_some(())
    });
    let dir = cli.tmp.path().join("containers/containers").join(name);
    let rootfs = dir.join("rootfs");
    eventually("the root to be unmounted", || {
        rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::empty())
            .ok()
            .or_else(|| (!is_mountpoint(&rootfs)).then_some(()))
    });
    let path = dir.join("container.json");
    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    r["detached"]["boot_id"] = "a-boot-before-this-one".into();
    std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
    assert!(ps_line(&cli, name).contains("stopped"));
    // Any command that opens the runtime reconciles it; then it starts again.
    cli.ok(&["stop", name]);
    assert!(
        ps_line(&cli, name).contains("exited (255)"),
        "{}",
        ps_line(&cli, name)
    );
    assert!(is_mountpoint(&rootfs));
    cli.ok(&["start", "-d", name]);
    eventually("hello twice in the log", || {
        (cli.ok(&["logs", name]).matches("hello").count() == 2).then_some(())
    });
    cli.ok(&["stop", "-t", "30", name]);
    cli.ok(&["rm", name]);
    assert_nothing_left(&cli, name);
}

/// `run -d --rm`: the monitor removes the container, its mounts and its
/// snapshot once it exited.
#[test]
fn run_d_rm_is_removed_by_its_monitor() {
    let Some(cli) = cli() else { return };
    let script = "while [ ! -e /sync/go ]; do sleep 0.1; done; echo bye";
    let sync = cli.tmp.path().join("sync");
    std::fs::create_dir_all(&sync).unwrap();
    let volume = format!("{}:/sync", sync.display());
    run_d(&cli, "native", "gone", &["--rm", "-v", &volume], script);
    std::fs::write(sync.join("go"), "").unwrap();
    eventually("the container to be removed", || {
        (!cli.ok(&["ps", "-q"]).contains("gone")).then_some(())
    });
    assert_nothing_left(&cli, "gone");
    let err = cli.fails(&["run", "-d", "--rm", "--restart", "always", IMAGE, "true"]);
    assert!(err.contains("--restart and --rm"), "{err}");
}

fn is_mountpoint(p: &Path) -> bool {
    let p = p.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

/// Reads `from` into a buffer on a thread.
fn reading(from: impl Into<std::os::fd::OwnedFd>) -> common::pty::Seen {
    common::pty::Seen::start(from.into())
}

/// `imagectl args` (an attach) with its stdin and stdout piped: the
/// process, what it prints, its input.
fn attach_piped(
    cli: &Cli,
    args: &[&str],
) -> (
    std::process::Child,
    common::pty::Seen,
    std::process::ChildStdin,
) {
    let mut attach = cli
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = reading(attach.stdout.take().unwrap());
    let input = attach.stdin.take().unwrap();
    (attach, out, input)
}

/// `attach` with stdin, as `docker attach`, under native, runc and crun:
/// lines typed into a `run -d -i` container's `cat` come back; ctrl-p
/// ctrl-q detaches with 0 and leaves it running; `--detach-keys` names
/// other keys; the end of attach's input closes the container's stdin, so
/// attach exits with the container's code.
#[test]
fn attach_with_stdin_detaches_and_closes_under_each_runtime() {
    use std::io::Write;
    let Some(cli) = cli() else { return };
    for rt in runtimes() {
        let name = format!("{rt}-i");
        run_d(&cli, rt, &name, &["-i"], "cat; exit 4");
        let (mut attach, out, mut input) = attach_piped(&cli, &["attach", &name]);
        input.write_all(b"one\n").unwrap();
        out.wait_for("one\n");
        input.write_all(b"\x10\x11").unwrap();
        let status = attach.wait().unwrap();
        assert!(status.success(), "{rt}: {status:?}");
        assert!(ps_line(&cli, &name).contains("running"), "{rt}");

        let (mut attach, out, mut input) =
            attach_piped(&cli, &["attach", "--detach-keys", "ctrl-x,x", &name]);
        // ctrl-p ctrl-q are input now; a lone ctrl-x is too.
        input.write_all(b"two\x10\x11\x18y\n").unwrap();
        out.wait_for("two\x10\x11\x18y\n");
        drop(input);
        let status = attach.wait().unwrap();
        assert_eq!(status.code(), Some(4), "{rt}");
        assert_eq!(out.finish(), "two\x10\x11\x18y\n", "{rt}");
        assert_eq!(cli.ok(&["wait", &name]), "4\n", "{rt}");
        assert_eq!(cli.ok(&["logs", &name]), "one\ntwo\x10\x11\x18y\n", "{rt}");
        cli.ok(&["rm", &name]);
    }
}

/// `attach` from a terminal to a `run -d -t -i` container, under native,
/// runc and crun: the terminal is raw while attached (keys go to the
/// container) and restored after; the container's terminal gets the
/// caller's size and follows it on SIGWINCH; ctrl-p ctrl-q detach and
/// leave it running; a later attach ends with its code.
#[test]
fn attach_t_is_raw_forwards_window_sizes_and_detaches_under_each_runtime() {
    use common::pty::{canonical, pty, winsize};
    use rustix::termios::tcsetwinsize;
    use std::io::Write;
    let Some(cli) = cli() else { return };
    let script = "read x; stty size; \
        while [ \"$(stty size)\" != \"40 120\" ]; do sleep 0.1; done; echo resized; \
        read y; exit 6";
    for rt in runtimes() {
        let name = format!("{rt}-t");
        run_d(&cli, rt, &name, &["-t", "-i"], script);
        let (master, slave) = pty();
        tcsetwinsize(&master, winsize(30, 100)).unwrap();
        let mut cmd = cli.command(&["attach", &name]);
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave.try_clone().unwrap());
        let mut attach = cmd.spawn().unwrap();
        drop(cmd);
        drop(slave);
        let seen = reading(master.try_clone().unwrap());
        let mut keys = std::fs::File::from(master.try_clone().unwrap());
        eventually("the terminal raw", || (!canonical(&master)).then_some(()));
        keys.write_all(b"go\r").unwrap();
        seen.wait_for("30 100");
        tcsetwinsize(&master, winsize(40, 120)).unwrap();
        let pid = rustix::process::Pid::from_raw(attach.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::WINCH).unwrap();
        seen.wait_for("resized");
        keys.write_all(b"\x10\x11").unwrap();
        let status = attach.wait().unwrap();
        assert!(status.success(), "{rt}: {status:?}");
        assert!(canonical(&master), "{rt}: the terminal restored");
        assert!(ps_line(&cli, &name).contains("running"), "{rt}");
        drop((keys, master));
        let _ = seen.finish();

        let (mut attach, out, mut input) = attach_piped(&cli, &["attach", &name]);
        input.write_all(b"bye\n").unwrap();
        drop(input);
        let status = attach.wait().unwrap();
        assert_eq!(status.code(), Some(6), "{rt}: {:?}", out.finish());
        cli.ok(&["rm", &name]);
    }
}

/// `create --restart --log-opt` records the policies and `start -d`
/// honours them, as `docker create` then `docker start`: on-failure:2
/// runs three times; a bad policy is refused at create.
#[test]
fn create_records_restart_and_log_options_for_start_d() {
    let Some(cli) = cli() else { return };
    for rt in runtimes() {
        let name = format!("{rt}-p");
        let args = [
            "create",
            "--runtime",
            rt,
            "--name",
            &name,
            "--restart",
            "on-failure:2",
            "--log-opt",
            "max-file=2",
            IMAGE,
            "sh",
            "-c",
            "echo run; exit 1",
        ];
        assert_eq!(cli.ok(&args), format!("{name}\n"));
        let r = record(&cli, &name);
        assert_eq!(
            r["detached"]["restart"],
            serde_json::json!({"on-failure": {"max_retries": 2}}),
            "{rt}: {r}"
        );
        assert_eq!(cli.ok(&["start", "-d", &name]), format!("{name}\n"));
        eventually("three runs", || {
            let r = record(&cli, &name);
            (r["detached"]["exits"] == 3 && !ps_line(&cli, &name).contains("running")).then_some(())
        });
        assert_eq!(cli.ok(&["logs", &name]), "run\nrun\nrun\n", "{rt}");
        assert_eq!(
            record(&cli, &name)["detached"]["log"]["max_file"],
            2,
            "{rt}"
        );
        cli.ok(&["rm", &name]);
    }
    let err = cli.fails(&["create", "--restart", "sometimes", IMAGE, "true"]);
    assert!(err.contains("sometimes"), "{err}");
    assert_eq!(cli.ok(&["ps", "-q"]), "");
}

/// Whether process `pid` catches signal number `s` (its `SigCgt` in /proc).
fn catches(pid: u32, s: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|m| m & (1 << (s - 1)) != 0)
}

/// SIGRTMIN+3 by number: busybox's `trap` takes a real-time signal only so.
const RTMIN_3: i32 = 37;

/// Sends signal number `s` to `child` with kill(1) (rustix sends only the
/// standard signals without `unsafe`).
fn send(child: &std::process::Child, s: i32) {
    let out = std::process::Command::new("kill")
        .args(["-s", &s.to_string(), &child.id().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "kill -s {s}: {out:?}");
}

/// kill(1) is there, or the test is skipped loudly (fails under CI).
fn have_kill() -> bool {
    let ok = !image_testsupport::tools::installed(&["kill"]).is_empty();
    if !ok {
        image_testsupport::tools::skip_or_fail("kill (procps, to send real-time signals)");
    }
    ok
}

/// A process that exits 3 on SIGUSR1 and 5 on SIGRTMIN+3, after "ready".
const TRAPS: &str = "trap 'echo got USR1; exit 3' USR1; trap 'echo got RTMIN+3; exit 5' 37; \
    echo ready; while true; do sleep 0.1; done";

/// The arguments of `imagectl verb` (`run`, `create`) of TRAPS as
/// container `name` under runtime `rt`, `extra` options before the image.
fn traps<'a>(verb: &'a str, rt: &'a str, name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![verb, "--runtime", rt, "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, "sh", "-c", TRAPS]);
    args
}

/// The exit code and the output of `imagectl args` (a foreground `run`
/// or `start -a` of TRAPS) sent signal `s` once its container is ready;
/// `rm -f` of `name` once imagectl has ended, since a container whose
/// client died runs on (as docker's, under runc and crun).
fn signalled(cli: &Cli, args: &[&str], name: &str, s: i32) -> (std::process::ExitStatus, String) {
    let mut child = cli.command(args).stdout(Stdio::piped()).spawn().unwrap();
    let out = reading(child.stdout.take().unwrap());
    out.wait_for("ready");
    send(&child, s);
    let status = child.wait().unwrap();
    if status.code().is_none() {
        // Its owner gone, the next command's gc may have collected it.
        let _ = cli.imagectl(&["rm", "-f", name]);
    }
    (status, out.finish())
}

/// `--sig-proxy`, on by default, as `docker run`, `docker start -a` and
/// `docker attach`, under the native backend, runc and crun: a SIGUSR1 or
/// a SIGRTMIN+3 sent to `imagectl run` (foreground), `imagectl start`
/// (attached) or `imagectl attach` (no terminal) reaches the container's
/// process, which traps it and exits 3 or 5; with `--sig-proxy=false` it
/// acts on imagectl, which it ends (the container is then removed by the
/// test: under runc and crun it runs on, as docker's does).
#[test]
fn signals_to_run_and_attach_reach_the_container_unless_sig_proxy_is_false() {
    use std::os::unix::process::ExitStatusExt;
    let Some(cli) = cli() else { return };
    if !have_kill() {
        return;
    }
    let usr1 = rustix::process::Signal::USR1.as_raw();
    for rt in runtimes() {
        let run = |extra: &[&str], name: &str, s: i32| {
            signalled(&cli, &traps("run", rt, name, extra), name, s)
        };
        let name = format!("{rt}-proxied");
        let (status, out) = run(&[], &name, usr1);
        assert_eq!(status.code(), Some(3), "{rt}: {status:?}");
        assert_eq!(out, "ready\ngot USR1\n", "{rt}");
        cli.ok(&["rm", &name]);
        let (status, out) = run(&[], &name, RTMIN_3);
        assert_eq!(status.code(), Some(5), "{rt}: {status:?}");
        assert_eq!(out, "ready\ngot RTMIN+3\n", "{rt}");
        cli.ok(&["rm", &name]);
        let name = format!("{rt}-not-proxied");
        let (status, out) = run(&["--sig-proxy=false"], &name, usr1);
        assert_eq!(status.signal(), Some(usr1), "{rt}: {status:?}");
        assert_eq!(out, "ready\n", "{rt}");
        let (status, out) = run(&["--sig-proxy=false"], &name, RTMIN_3);
        assert_eq!(status.signal(), Some(RTMIN_3), "{rt}: {status:?}");
        assert_eq!(out, "ready\n", "{rt}");

        // `start` attached (with or without -a), as `docker start -a`.
        let name = format!("{rt}-started");
        cli.ok(&traps("create", rt, &name, &[]));
        let (status, out) = signalled(&cli, &["start", "-a", &name], &name, usr1);
        assert_eq!(status.code(), Some(3), "{rt}: {status:?}");
        assert_eq!(out, "ready\ngot USR1\n", "{rt}");
        let (status, out) = signalled(&cli, &["start", &name], &name, RTMIN_3);
        assert_eq!(status.code(), Some(5), "{rt}: {status:?}");
        assert_eq!(out, "ready\ngot RTMIN+3\n", "{rt}");
        let (status, out) = signalled(&cli, &["start", "--sig-proxy=false", &name], &name, usr1);
        assert_eq!(status.signal(), Some(usr1), "{rt}: {status:?}");
        assert_eq!(out, "ready\n", "{rt}");

        // Made with -t: not proxied (as `docker start -a` and `run -t`),
        // its keys reach it through its terminal; the signal ends imagectl.
        let name = format!("{rt}-tty");
        cli.ok(&traps("create", rt, &name, &["-t"]));
        let (status, out) = signalled(&cli, &["start", &name], &name, usr1);
        assert_eq!(status.signal(), Some(usr1), "{rt}: {status:?}");
        assert_eq!(out.replace('\r', ""), "ready\n", "{rt}");

        let name = format!("{rt}-att");
        run_d(&cli, rt, &name, &[], TRAPS);
        // Attached after "ready", which it then does not see.
        eventually("ready in the log", || {
            cli.ok(&["logs", &name]).contains("ready").then_some(())
        });
        let attach = |proxy: bool, s: i32| {
            let mut args = vec!["attach", "--no-stdin"];
            if !proxy {
                args.push("--sig-proxy=false");
            }
            args.push(&name);
            let mut attach = cli.command(&args).stdout(Stdio::piped()).spawn().unwrap();
            let out = reading(attach.stdout.take().unwrap());
            // Attached once it has its socket; proxying, once it catches the
            // signal (its handler comes after the connection).
            eventually("the attacher to be ready", || {
                let pid = attach.id();
                let connected = std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .unwrap()
                    .flatten()
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .any(|l| l.to_string_lossy().starts_with("socket:"));
                (connected && (!proxy || catches(pid, s))).then_some(())
            });
            send(&attach, s);
            (attach.wait().unwrap(), out.finish())
        };
        let (status, out) = attach(false, usr1);
        assert_eq!(status.signal(), Some(usr1), "{rt}: {status:?}");
        assert_eq!(out, "", "{rt}");
        assert!(ps_line(&cli, &name).contains("running"), "{rt}");
        let (status, out) = attach(true, RTMIN_3);
        assert_eq!(status.code(), Some(5), "{rt}: {status:?}");
        assert_eq!(out, "got RTMIN+3\n", "{rt}");
        cli.ok(&["rm", &name]);
    }
}

/// `imagectl kill -s` takes the real-time signals as docker does
/// (`RTMIN+3`, `SIGRTMAX-1`, numbers): a container's process that traps
/// SIGRTMIN+3 gets it, under the native backend, runc and crun. A signal
/// out of range or reserved is refused, naming it.
#[test]
fn kill_s_sends_real_time_signals_under_each_runtime() {
    let Some(cli) = cli() else { return };
    for rt in runtimes() {
        for spec in ["RTMIN+3", "SIGRTMIN+3", "37", "sigrtmax-27"] {
            let name = format!("{rt}-rt");
            run_d(&cli, rt, &name, &[], TRAPS);
            eventually("ready in the log", || {
                cli.ok(&["logs", &name]).contains("ready").then_some(())
            });
            cli.ok(&["kill", "-s", spec, &name]);
            assert_eq!(cli.ok(&["wait", &name]), "5\n", "{rt} {spec}");
            assert_eq!(
                cli.ok(&["logs", &name]),
                "ready\ngot RTMIN+3\n",
                "{rt} {spec}"
            );
            cli.ok(&["rm", &name]);
        }
    }
    run_d(&cli, "native", "target", &[], TRAPS);
    for (spec, says) in [
        ("RTMIN+31", "out of range"),
        ("65", "out of range"),
        ("32", "reserved"),
        ("RTMIN-1", "unknown"),
    ] {
        let err = cli.fails(&["kill", "-s", spec, "target"]);
        assert!(err.contains(spec) && err.contains(says), "{spec}: {err}");
    }
    assert!(ps_line(&cli, "target").contains("running"));
    cli.ok(&["rm", "-f", "target"]);
}

/// `stop --signal` and `restart --signal`, as `docker stop -s`: the
/// signal given goes first in place of SIGTERM (a real-time one too),
/// under the native backend, runc and crun.
#[test]
fn stop_and_restart_send_the_signal_given_under_each_runtime() {
    let Some(cli) = cli() else { return };
    for rt in runtimes() {
        let name = format!("{rt}-stop");
        let readies = |n: usize| {
            eventually("the run's ready", || {
                (cli.ok(&["logs", &name]).matches("ready").count() == n).then_some(())
            })
        };
        run_d(&cli, rt, &name, &[], TRAPS);
        readies(1);
        let stopped = cli.ok(&["stop", "-s", "RTMIN+3", "-t", "30", &name]);
        assert_eq!(stopped, format!("{name}\n"));
        assert_eq!(cli.ok(&["wait", &name]), "5\n", "{rt}");
        assert_eq!(cli.ok(&["start", "-d", &name]), format!("{name}\n"));
        cli.wait_running(&name);
        readies(2);
        let restarted = cli.ok(&["restart", "--signal", "SIGUSR1", "-t", "30", &name]);
        assert_eq!(restarted, format!("{name}\n"));
        cli.wait_running(&name);
        readies(3);
        assert_eq!(
            cli.ok(&["logs", &name]),
            "ready\ngot RTMIN+3\nready\ngot USR1\nready\n",
            "{rt}"
        );
        cli.ok(&["rm", "-f", &name]);
    }
    let err = cli.fails(&["stop", "-s", "NOPE", "x"]);
    assert!(err.contains("NOPE"), "{err}");
}
