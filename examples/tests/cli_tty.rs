//! `imagectl run -t -i` on the native backend, and on runc and crun
//! (their console socket), from a terminal (a pty the test owns as
//! imagectl's standard streams): the caller's terminal is raw while the
//! container runs and restored after, the container's terminal starts at
//! the caller's window size and follows it on SIGWINCH. As root; a
//! missing tool or privilege skips the test loudly unless CI=true.

mod common;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{Cli, TIMEOUT};
use rustix::termios::{tcgetattr, tcsetwinsize, LocalModes, Winsize};

const IMAGE: &str = "test.local/tty-busybox:1";
const APPLETS: &[&str] = &["sh", "stty", "sleep", "echo", "test", "[", "tty"];

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// A new pty: (master, slave).
fn pty() -> (OwnedFd, OwnedFd) {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    (master, slave)
}

/// Waits (bounded by TIMEOUT) until what the master read holds `text`.
fn wait_for(seen: &Arc<Mutex<Vec<u8>>>, text: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
        if s.contains(text) {
            return;
        }
        assert!(Instant::now() < deadline, "no {text:?} in {s:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn canonical(master: &OwnedFd) -> bool {
    tcgetattr(master)
        .unwrap()
        .local_modes
        .contains(LocalModes::ICANON)
}

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
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let seen = Arc::clone(&seen);
        let mut m = std::fs::File::from(master.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once every slave is closed: the end.
            while let Ok(n) = m.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    // The container's terminal starts at the caller's size...
    wait_for(&seen, "30 100");
    // ...while the caller's terminal is raw.
    assert!(!canonical(&master));
    // A new size and SIGWINCH (as the terminal would send it) reach it.
    tcsetwinsize(&master, winsize(40, 120)).unwrap();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::WINCH).unwrap();
    wait_for(&seen, "resized");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The caller's terminal is restored.
    assert!(canonical(&master));
    drop(master);
    let _ = reader.join();
    let seen = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    seen
}
