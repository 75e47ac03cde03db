//! The backend conformance suite: what every [`Backend`] (runc, crun, the
//! native executor, another implementation) must do with a bundle, by the
//! lifecycle the [`backend`](crate::backend) module describes. Built with
//! the `testsuite` feature; the crate's tests run it against each backend
//! the machine has.
//!
//! The suite knows nothing of how a bundle is made: the caller gives a
//! function that writes a bundle (a busybox-static root filesystem is
//! enough: `sh`, `sleep`, `echo`) whose process runs the given arguments,
//! and returns its directory. Running containers needs root.
//!
//! ```no_run
//! # fn bundle_running(args: &[&str]) -> std::path::PathBuf { unimplemented!() }
//! use std::time::Duration;
//! use image_runtime::{NativeRuntime, testsuite};
//!
//! let state = std::path::Path::new("/run/my-tests/native");
//! testsuite::backend(
//!     || NativeRuntime::new(state).unwrap(),
//!     bundle_running,
//!     Duration::from_secs(60),
//! );
//! ```
//!
//! A failed check panics (the suite runs inside a `#[test]`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed check panics

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backend::{self, Backend, BackendError, Exit, Signal, Status, Stdio};

/// Runs every check of the suite. `open` opens a handle on the backend's
/// state (called more than once: a second handle plays another process
/// that finds a container by its ID); `bundle` writes a bundle whose
/// process runs these arguments and returns its directory; `timeout`
/// bounds each wait for a container.
///
/// # Panics
/// When the backend behaves otherwise than a backend must.
pub fn backend<B, O, W>(open: O, bundle: W, timeout: Duration)
where
    B: Backend,
    O: Fn() -> B,
    W: Fn(&[&str]) -> PathBuf,
{
    let be = open();
    exit_codes_and_output(&be, &bundle, timeout);
    kill_state_and_delete_by_id(&be, &open, &bundle, timeout);
    // Deleting an unknown container succeeds.
    be.delete(&id(&be, "never-created"), false)
        .expect("deleting an unknown container succeeds");
}

/// A container ID of the suite, for this backend.
fn id(be: &dyn Backend, check: &str) -> String {
    format!("suite-{}-{check}", be.name())
}

/// Creates, starts, waits for and deletes one container.
fn run(be: &dyn Backend, id: &str, dir: &Path, timeout: Duration) -> Exit {
    be.create(id, dir).expect("create");
    let mut p = be.start(id, dir, Stdio::capture()).expect("start");
    let exit = backend::wait_timeout(&mut *p, timeout)
        .expect("wait")
        .expect("finished in time");
    drop(p);
    be.delete(id, true).expect("delete");
    exit
}

fn exit_codes_and_output(be: &dyn Backend, bundle: &dyn Fn(&[&str]) -> PathBuf, t: Duration) {
    let dir = bundle(&["sh", "-c", "exit 42"]);
    assert_eq!(run(be, &id(be, "exit-42"), &dir, t).status.code(), 42);
    let dir = bundle(&["sh", "-c", "echo out; echo err >&2"]);
    let e = run(be, &id(be, "out-err"), &dir, t);
    assert_eq!(
        (e.stdout_str(), e.stderr_str()),
        ("out\n".into(), "err\n".into())
    );
}

fn kill_state_and_delete_by_id<B: Backend>(
    be: &B,
    open: &dyn Fn() -> B,
    bundle: &dyn Fn(&[&str]) -> PathBuf,
    t: Duration,
) {
    // kill from "another process": by ID, through the backend's state.
    let id = id(be, "killed");
    let dir = bundle(&["sleep", "100"]);
    be.create(&id, &dir).expect("create");
    let mut p = be.start(&id, &dir, Stdio::capture()).expect("start");
    let other = open();
    // A runtime run as a command (runc, crun) registers the container a
    // moment after `start` returns; wait for it, within `t`.
    let deadline = Instant::now() + t;
    let running = loop {
        match other.state(&id) {
            Ok(s) if s.status == Status::Running => break s,
            Ok(_) | Err(BackendError::NotFound { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("{id} is not seen running by another handle: {other:?}"),
        }
    };
    assert_eq!(running.pid, p.pid());
    other.kill(&id, Signal::KILL).expect("kill");
    let exit = backend::wait_timeout(&mut *p, t)
        .expect("wait")
        .expect("killed in time");
    assert_eq!((exit.status.code(), exit.status.signal()), (137, Some(9)));
    // Its process ended: it is stopped until deleted (native), or already
    // forgotten (runc and crun, which `OciRuntime` runs in the foreground
    // with `run`, remove it when its process ends); never running.
    match other.state(&id) {
        Ok(s) => assert_eq!(s.status, Status::Stopped, "{id}"),
        Err(e) => assert!(matches!(e, BackendError::NotFound { .. }), "{id}: {e}"),
    }
    assert!(other.kill(&id, Signal::KILL).is_err());
    drop(p);
    be.delete(&id, false).expect("delete");
    assert!(matches!(be.state(&id), Err(BackendError::NotFound { .. })));
}
