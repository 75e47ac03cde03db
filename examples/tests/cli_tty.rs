//! `imagectl run -t -i` on the native backend, and on runc and crun
//! (their console socket), from a terminal (a pty the test owns as
//! imagectl's standard streams): the caller's terminal is raw while the
//! container runs and restored after, the container's terminal starts at
//! the caller's window size and follows it on SIGWINCH. As root; a
//! missing tool or privilege skips the test loudly unless CI=true.

mod common;

use common::pty::{canonical, pty, winsize, Seen};
use common::Cli;
use rustix::termios::tcsetwinsize;

const IMAGE: &str = "test.local/tty-busybox:1";
const APPLETS: &[&str] = &["sh", "stty", "sleep", "echo", "test", "[", "tty"];

const RESIZED: &str =
    "stty size; while [ \"$(stty size)\" != \"40 120\" ]; do sleep 0.1; done; echo resized";

#[test]
fn run_t_makes_the_terminal_raw_and_forwards_window_sizes() {
    let Some(cli) = Cli::with_shell_image(APPLETS, IMAGE) else {
        return;
    };
    run_t_from_a_terminal(&cli, &[], RESIZED);
}

/// runc and crun give the container a terminal of their own through the
/// console socket: it is one (`tty` names a pty, `test -t` holds), of
/// the caller's size, resized on SIGWINCH, with the caller's terminal raw
/// meanwhile and restored after, as on the native backend.
#[test]
fn run_t_under_runc_and_crun_uses_the_console_socket() {
    for runtime in ["runc", "crun"] {
        if !common::ready(&[runtime]) {
            continue;
        }
        let Some(cli) = Cli::with_shell_image(APPLETS, IMAGE) else {
            return;
        };
        let script = format!("tty; test -t 0 && test -t 1 && echo both-tty; {RESIZED}");
        let seen = run_t_from_a_terminal(&cli, &["--runtime", runtime], &script);
        assert!(seen.contains("/dev/pts/"), "{runtime}: {seen:?}");
        assert!(seen.contains("both-tty"), "{runtime}: {seen:?}");
    }
}

/// `imagectl run --rm -t -i <runtime_args> IMAGE sh -c script` on a pty
/// of 30 x 100 that the test owns: the container's terminal must start at
/// that size (`script` prints `stty size` first), the caller's terminal be
/// raw until the run ends, a resize to 40 x 120 with SIGWINCH reach the
/// container (`script` then prints `resized`). Returns what was read.
fn run_t_from_a_terminal(cli: &Cli, runtime_args: &[&str], script: &str) -> String {
    let (master, slave) = pty();
    tcsetwinsize(&master, winsize(30, 100)).unwrap();
    assert!(canonical(&master));
    let mut args = vec!["run", "--rm", "-t", "-i"];
    args.extend_from_slice(runtime_args);
    args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
    let mut cmd = cli.command(&args);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    let mut child = cmd.spawn().unwrap();
    // Only imagectl holds the slave now: the master reads EIO once it exits.
    drop(cmd);
    drop(slave);
    let seen = Seen::start(master.try_clone().unwrap());
    // The container's terminal starts at the caller's size...
    seen.wait_for("30 100");
    // ...while the caller's terminal is raw.
    assert!(!canonical(&master));
    // A new size and SIGWINCH (as the terminal would send it) reach it.
    tcsetwinsize(&master, winsize(40, 120)).unwrap();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::WINCH).unwrap();
    seen.wait_for("resized");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The caller's terminal is restored.
    assert!(canonical(&master));
    drop(master);
    seen.finish()
}
