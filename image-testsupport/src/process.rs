//! Child processes a test starts: bounded in time, killed by process group
//! (never by name), and the test binary started again to play another
//! process.

use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// How long one command may take in [`run_bounded`].
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `cmd` (stdin from /dev/null, output captured) in the test's
/// process group; it is killed, and the test fails, after [`TIMEOUT`].
pub fn run_bounded(cmd: Command) -> Output {
    bounded(cmd, false)
}

/// As [`run_bounded`], but `cmd` is spawned as the leader of a process
/// group of its own, and on timeout that whole group is killed
/// ([`kill_group`]).
pub fn run_bounded_in_group(cmd: Command) -> Output {
    bounded(cmd, true)
}

fn bounded(mut cmd: Command, own_group: bool) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if own_group {
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            if own_group {
                kill_group(&mut child);
            } else {
                let _ = child.kill();
            }
            let out = child.wait_with_output().expect("output");
            panic!(
                "timed out: {cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `program args` through timeout(1) (killed 5 s after TERM at
/// `secs`), and fails the test, with its output, when it fails.
pub fn run_checked(secs: u32, program: &str, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .args(["-k", "5", &secs.to_string(), program])
        .args(args)
        .output()
        .expect("spawn");
    if !out.status.success() {
        panic!(
            "{program} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// SIGKILL to the child's own process group (it was spawned as its
/// leader): only that group, never by name; then the child is reaped.
pub fn kill_group(child: &mut Child) {
    if let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts this test binary again to run only the test `name`, in its own
/// process group, with `envs`; returns the child and a channel of its
/// stdout lines.
pub fn spawn_self(name: &str, envs: &[(&str, String)]) -> (Child, Receiver<String>) {
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        name,
        "--nocapture",
        "--test-threads=1",
        "--quiet",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .process_group(0);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn the test binary");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// In a child started by [`spawn_self`]: dies with the parent, and exits
/// after `seconds` whatever happens.
pub fn child_guard(seconds: u64) {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .expect("prctl");
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(seconds));
        eprintln!("child timed out after {seconds}s");
        std::process::exit(3);
    });
}

/// Polls `f` every 20 ms until it gives `Some`, for at most [`TIMEOUT`];
/// panics naming `what` when time runs out. For states another process
/// reaches (a container running, a line in a log), never for timing.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
