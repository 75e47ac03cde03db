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

fn bounded(cmd: Command, own_group: bool) -> Output {
    bounded_for(cmd, own_group, TIMEOUT)
}

/// [`bounded`] with the time limit given. The output is read while the
/// command runs (on two threads), so a command that writes more than a
/// pipe holds (64 KiB) goes on instead of waiting for a reader until the
/// limit.
fn bounded_for(mut cmd: Command, own_group: bool, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if own_group {
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().expect("spawn");
    let stdout = Drain::start(child.stdout.take().expect("piped stdout"));
    let stderr = Drain::start(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            // A process the command left behind may hold the pipes open:
            // what was read by then is taken, after at most 10 s.
            let until = Instant::now() + Duration::from_secs(10);
            return Output {
                status,
                stdout: stdout.take(until),
                stderr: stderr.take(until),
            };
        }
        if Instant::now() > deadline {
            if own_group {
                kill_group(&mut child);
            } else {
                let _ = child.kill();
                let _ = child.wait();
            }
            let said = stderr.take(Instant::now() + Duration::from_secs(10));
            panic!("timed out: {cmd:?}: {}", String::from_utf8_lossy(&said));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A pipe read to its end on a thread of its own, so the command writing
/// to it never waits for a reader.
struct Drain {
    read: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    ended: Receiver<()>,
}

impl Drain {
    fn start(mut pipe: impl std::io::Read + Send + 'static) -> Drain {
        let read = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, ended) = channel();
        let into = std::sync::Arc::clone(&read);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => into
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
        Drain { read, ended }
    }

    /// What was read: all of it once the pipe has ended, or what had come
    /// by `until`.
    fn take(&self, until: Instant) -> Vec<u8> {
        let _ = self
            .ended
            .recv_timeout(until.saturating_duration_since(Instant::now()));
        std::mem::take(&mut *self.read.lock().unwrap_or_else(|p| p.into_inner()))
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

/// The variable that tells a child of [`with_openat2_refused`] the errno
/// its filter answers `openat2` with.
const REFUSE_OPENAT2: &str = "IMAGE_TESTSUPPORT_REFUSE_OPENAT2";

/// What a child of [`with_openat2_refused`] prints once `body` returned.
const REFUSED_AND_DONE: &str = "openat2 refused: body done";

/// Runs `body` where a seccomp filter refuses `openat2`, as a container
/// runtime's profile refuses a call it does not know: once answering
/// `EPERM` (older Docker profiles), once `ENOSYS` (newer ones), each in a
/// child process of its own (this test binary started again to run only
/// the test `name`, its full path), since a library's fallback, once
/// taken, is remembered for the process. In the parent, fails unless each
/// child ran `body` to its end; in a child, installs the filter
/// ([`crate::seccomp::refuse_on_this_thread`]), checks that it holds, and
/// runs `body`. The test calls it first thing, and does
/// nothing else.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn with_openat2_refused(name: &str, body: impl FnOnce()) {
    if let Some(errno) = std::env::var_os(REFUSE_OPENAT2) {
        let errno: u16 = errno.to_str().and_then(|e| e.parse().ok()).expect("errno");
        child_guard(120);
        crate::seccomp::refuse_on_this_thread(libc::SYS_openat2, errno)
            .expect("install the seccomp filter");
        let err = rustix::fs::openat2(
            rustix::fs::CWD,
            ".",
            rustix::fs::OFlags::PATH,
            rustix::fs::Mode::empty(),
            rustix::fs::ResolveFlags::empty(),
        )
        .expect_err("openat2 is refused");
        assert_eq!(err.raw_os_error(), i32::from(errno));
        body();
        println!("{REFUSED_AND_DONE}");
        return;
    }
    for errno in [libc::EPERM, libc::ENOSYS] {
        let (mut child, lines) = spawn_self(name, &[(REFUSE_OPENAT2, errno.to_string())]);
        let status = child.wait().expect("wait");
        let said: Vec<String> = lines.iter().collect();
        assert!(
            status.success(),
            "errno {errno}: the child failed: {said:?}"
        );
        assert!(
            said.iter().any(|l| l == REFUSED_AND_DONE),
            "errno {errno}: the child did not get through: {said:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command that writes more than a pipe holds, to both outputs,
    /// finishes, its output whole: read only once it had ended, it would
    /// have waited on its first full pipe until the limit.
    #[test]
    fn a_command_writing_more_than_a_pipe_holds_is_not_stalled() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "head -c 1048576 /dev/zero; head -c 300000 /dev/zero >&2; echo done >&2",
        ]);
        let out = bounded_for(cmd, false, Duration::from_secs(20));
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout.len(), 1 << 20);
        assert_eq!(out.stderr.len(), 300_005);
    }
}
