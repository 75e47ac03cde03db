//! Detached containers (`Container::start_detached`) against the real
//! backends, as root: a monitor per container re-executed from this test
//! binary (the `monitor_hook` test is its entry: see `options`), its
//! output in a capped JSON log, stop/wait/logs/attach from the runtime,
//! restart policies, a killed monitor and a simulated reboot. A missing
//! tool or privilege skips loudly unless CI=true.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use image_runtime::monitor::{AttachInput, DetachKeys, DetachOptions, LogEntry, LogQuery};
use image_runtime::{
    ContainerRecord, ContainerStatus, LogOptions, NativeOptions, RestartPolicy, Rootfs, Runtime,
    RuntimeKind,
};

use common::{assert_no_cgroups, TIMEOUT};
use image_testsupport::process::eventually;

/// The grace of a stop whose SIGTERM the container ignores (a shell as
/// pid 1 without a trap).
const GRACE: Duration = Duration::from_millis(300);

const APPLETS: &[&str] = &["sh", "echo", "sleep", "seq", "cat", "true", "wc", "stty"];

/// The monitor's entry point in this test binary: the monitor re-executes
/// the binary to run just this test, whose hook then never returns. In an
/// ordinary run it returns at once.
#[test]
fn monitor_hook() {
    image_runtime::monitor::run_if_requested();
}

/// Options whose monitor is this binary running `monitor_hook`.
fn options(restart: RestartPolicy, log: LogOptions) -> DetachOptions {
    let exe = std::env::current_exe().unwrap();
    DetachOptions {
        restart,
        log,
        monitor_command: Some(
            [
                exe.as_os_str(),
                "monitor_hook".as_ref(),
                "--exact".as_ref(),
                "--nocapture".as_ref(),
                "--test-threads=1".as_ref(),
            ]
            .iter()
            .map(|s| s.to_os_string())
            .collect(),
        ),
    }
}

fn default_options() -> DetachOptions {
    options(RestartPolicy::No, LogOptions::default())
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    rootfs: PathBuf,
}

/// Removes whatever a failing test left (processes, mounts, cgroups).
impl Drop for Fixture {
    fn drop(&mut self) {
        for kind in ["native", "runc", "crun"] {
            if let Ok(rt) = runtime(&self.root, kind) {
                for r in rt.list().unwrap_or_default() {
                    if r.backend == kind {
                        let _ = rt.stop(&r.id, Duration::from_secs(1));
                        let _ = rt.delete(&r.id);
                    }
                }
            }
        }
    }
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    common::busybox_rootfs(&rootfs, APPLETS);
    Fixture {
        root: tmp.path().join("state"),
        rootfs,
        _tmp: tmp,
    }
}

/// A fixture and its native runtime, or `None` (skipped loudly) when
/// containers cannot run here.
fn native() -> Option<(Fixture, Runtime)> {
    if !common::ready(&[]) {
        return None;
    }
    let f = fixture();
    let rt = runtime(&f.root, "native").unwrap();
    Some((f, rt))
}

/// Creates a container of `cmd` on the fixture's root and starts it
/// detached with `o`; its ID.
fn detached(rt: &Runtime, f: &Fixture, cmd: &[&str], o: &DetachOptions) -> String {
    rt.container(Rootfs::Directory(f.rootfs.clone()))
        .cmd(cmd.iter().copied())
        .create()
        .unwrap()
        .start_detached(o)
        .unwrap()
        .id
}

fn runtime(root: &Path, kind: &str) -> Result<Runtime, image_runtime::ContainerError> {
    match kind {
        "native" => Runtime::native(root, NativeOptions::default()),
        "crun" => Runtime::oci(root, RuntimeKind::Crun),
        _ => Runtime::oci(root, RuntimeKind::Runc),
    }
}

/// The backends installed here (native always).
fn backends() -> Vec<&'static str> {
    let mut v = vec!["native"];
    v.extend(image_testsupport::tools::installed(&["runc", "crun"]));
    if v.len() < 3 {
        image_testsupport::tools::skip_or_fail("runc or crun (detached under them)");
    }
    v
}

fn texts(entries: &[LogEntry], stream: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.stream == stream)
        .map(|e| e.log.clone())
        .collect()
}

fn record(rt: &Runtime, id: &str) -> ContainerRecord {
    rt.load(id).unwrap().record().clone()
}

/// True while the monitor recorded as the container's owner runs.
fn monitor_alive(rt: &Runtime, id: &str) -> bool {
    record(rt, id).owner.is_some_and(|o| o.is_alive())
}

/// run -d, then ps (list), logs, stop with a trapped SIGTERM, wait, and a
/// second container's own exit code, under native, runc and crun.
#[test]
fn detached_run_stop_wait_and_logs_under_each_backend() {
    if !common::ready(&[]) {
        return;
    }
    let f = fixture();
    for kind in backends() {
        let rt = runtime(&f.root, kind).unwrap();
        let c = rt
            .container(Rootfs::Directory(f.rootfs.clone()))
            .id(format!("{kind}-svc"))
            .cmd([
                "/bin/sh",
                "-c",
                "trap 'echo term; exit 7' TERM; echo out; echo err >&2; \
                 while true; do sleep 0.1; done",
            ])
            .create()
            .unwrap();
        let r = c.start_detached(&default_options()).unwrap();
        // Returned while the container runs on, under its monitor.
        assert_eq!(r.status, ContainerStatus::Running, "{kind}");
        assert_ne!(r.owner.unwrap().pid, std::process::id(), "{kind}");
        let listed = rt.list().unwrap();
        let mine = listed.iter().find(|x| x.id == r.id).unwrap();
        assert_eq!(mine.observed_status(), ContainerStatus::Running, "{kind}");
        assert_eq!(rt.try_wait(&r.id).unwrap(), None, "{kind}");
        let entries = eventually("both lines in the log", || {
            let (e, _) = rt.logs(&r.id, &LogQuery::default()).unwrap();
            (e.len() >= 2).then_some(e)
        });
        assert_eq!(texts(&entries, "stdout"), ["out\n"], "{kind}");
        assert_eq!(texts(&entries, "stderr"), ["err\n"], "{kind}");
        assert!(entries.iter().all(|e| e.timestamp().is_some()), "{kind}");
        assert_eq!(rt.stop(&r.id, TIMEOUT).unwrap(), Some(7), "{kind}");
        assert_eq!(rt.wait(&r.id, Some(TIMEOUT)).unwrap(), Some(7), "{kind}");
        let rec = record(&rt, &r.id);
        assert_eq!(rec.status, ContainerStatus::Stopped, "{kind}");
        let d = rec.detached.unwrap();
        assert!(d.finished_at.is_some() && d.exits == 1, "{kind}: {d:?}");
        let (e, _) = rt.logs(&r.id, &LogQuery::default()).unwrap();
        assert_eq!(texts(&e, "stdout"), ["out\n", "term\n"], "{kind}");
        let tail = rt
            .logs(
                &r.id,
                &LogQuery {
                    tail: Some(1),
                    since: None,
                },
            )
            .unwrap()
            .0;
        assert_eq!(tail.len(), 1, "{kind}");

        // Its own exit code, seen by a waiter that attached before it ended.
        let c = rt
            .container(Rootfs::Directory(f.rootfs.clone()))
            .id(format!("{kind}-exit"))
            .cmd(["/bin/sh", "-c", "sleep 0.5; echo bye; exit 3"])
            .create()
            .unwrap();
        let id = c.start_detached(&default_options()).unwrap().id;
        let mut seen = Vec::new();
        let code = rt.attach(&id, |e| seen.push(e.log.clone())).unwrap();
        assert_eq!(code, Some(3), "{kind}");
        assert_eq!(seen, ["bye\n"], "{kind}");
        assert_eq!(rt.wait(&id, None).unwrap(), Some(3), "{kind}");
        for id in [r.id, id] {
            rt.delete(&id).unwrap();
            assert_no_cgroups(&id);
        }
    }
}

/// Far more output than the cap: the log is rotated into exactly
/// `max_file` files, each within the cap, the newest lines kept in order.
#[test]
fn the_log_is_capped_and_rotated() {
    let Some((f, rt)) = native() else { return };
    let cap = LogOptions {
        max_size: LogOptions::MIN_SIZE,
        max_file: 2,
    };
    let o = options(RestartPolicy::No, cap);
    let id = detached(&rt, &f, &["/bin/seq", "1", "20000"], &o);
    assert_eq!(rt.wait(&id, Some(TIMEOUT)).unwrap(), Some(0));
    let dir = rt.load(&id).unwrap().bundle().to_owned();
    let mut logs: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("container.log"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    logs.sort();
    let names: Vec<&str> = logs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["container.log", "container.log.1"]);
    for (n, len) in &logs {
        assert!(*len <= cap.max_size, "{n} is {len} bytes");
    }
    let (entries, _) = rt.logs(&id, &LogQuery::default()).unwrap();
    let nums: Vec<u32> = entries
        .iter()
        .map(|e| e.log.trim().parse().unwrap())
        .collect();
    assert_eq!(nums.last(), Some(&20000));
    assert!(nums.len() < 20000, "nothing was dropped: {}", nums.len());
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1));
    rt.delete(&id).unwrap();
}

/// on-failure:2 runs a failing command exactly three times (counted in a
/// file of its root and in the log), then leaves it stopped with its code.
#[test]
fn on_failure_2_runs_three_times() {
    let Some((f, rt)) = native() else { return };
    let policy = RestartPolicy::OnFailure {
        max_retries: Some(2),
    };
    let cmd = ["/bin/sh", "-c", "echo run >> /data/count; echo run; exit 1"];
    let id = detached(&rt, &f, &cmd, &options(policy, LogOptions::default()));
    eventually("the monitor to finish", || {
        (!monitor_alive(&rt, &id)).then_some(())
    });
    let count = std::fs::read_to_string(f.rootfs.join("data/count")).unwrap();
    assert_eq!(count.lines().count(), 3, "{count}");
    let rec = record(&rt, &id);
    assert_eq!(rec.status, ContainerStatus::Stopped);
    assert_eq!(rec.exit_code, Some(1));
    let d = rec.detached.unwrap();
    assert_eq!((d.restart_count, d.exits), (2, 3));
    let (entries, _) = rt.logs(&id, &LogQuery::default()).unwrap();
    assert_eq!(texts(&entries, "stdout"), ["run\n"; 3]);
    rt.delete(&id).unwrap();
}

/// `always` restarts a container that exits successfully, and a stop ends
/// that: the monitor exits and the runs it logged are all there were.
#[test]
fn always_restarts_until_stopped() {
    let Some((f, rt)) = native() else { return };
    let cmd = ["/bin/sh", "-c", "echo run; sleep 0.2; exit 0"];
    let o = options(RestartPolicy::Always, LogOptions::default());
    let id = detached(&rt, &f, &cmd, &o);
    eventually("two restarts", || {
        (record(&rt, &id).detached.unwrap().restart_count >= 2).then_some(())
    });
    rt.stop(&id, GRACE).unwrap();
    eventually("the monitor to exit after stop", || {
        (!monitor_alive(&rt, &id)).then_some(())
    });
    let rec = record(&rt, &id);
    assert_eq!(rec.status, ContainerStatus::Stopped);
    let d = rec.detached.unwrap();
    let (entries, _) = rt.logs(&id, &LogQuery::default()).unwrap();
    assert_eq!(texts(&entries, "stdout").len() as u64, d.exits);
    assert_eq!(u64::from(d.restart_count) + 1, d.exits);
    // Started again by hand, it runs (the stop is forgotten) and is restarted.
    let again = rt.restart(&id, GRACE, default_monitor()).unwrap();
    assert_eq!(again.detached.unwrap().restart, RestartPolicy::Always);
    eventually("a restart after the manual one", || {
        (record(&rt, &id).detached.unwrap().restart_count >= 1).then_some(())
    });
    rt.stop(&id, GRACE).unwrap();
    rt.delete(&id).unwrap();
}

fn default_monitor() -> Option<Vec<std::ffi::OsString>> {
    default_options().monitor_command
}

/// A monitor killed with SIGKILL: the container is unknown, then `gc`
/// removes it with its cgroups (the native init died with the monitor).
/// A simulated reboot (another boot ID recorded, monitor and process gone)
/// is reconciled by the next runtime: stopped with 255, kept, startable.
#[test]
fn a_killed_monitor_and_a_reboot() {
    let Some((f, rt)) = native() else { return };
    let sleeper = |name: &str| {
        rt.container(Rootfs::Directory(f.rootfs.clone()))
            .id(name)
            .cmd(["/bin/sh", "-c", "echo up; while true; do sleep 0.1; done"])
            .create()
            .unwrap()
            .start_detached(&default_options())
            .unwrap()
    };
    let killed = sleeper("killed");
    let monitor = killed.owner.unwrap().pid;
    kill9(monitor);
    eventually("the monitor to die", || {
        (!monitor_alive(&rt, "killed")).then_some(())
    });
    assert_eq!(
        record(&rt, "killed").observed_status(),
        ContainerStatus::Unknown
    );
    let removed = rt.gc().unwrap();
    assert_eq!(removed, ["killed"]);
    assert!(!f.root.join("containers/killed").exists());
    assert_no_cgroups("killed");

    let rebooted = sleeper("rebooted");
    eventually("the first run's output", || {
        let (entries, _) = rt.logs("rebooted", &LogQuery::default()).unwrap();
        (!entries.is_empty()).then_some(())
    });
    kill9(rebooted.owner.unwrap().pid);
    eventually("the monitor to die", || {
        (!monitor_alive(&rt, "rebooted")).then_some(())
    });
    let path = f.root.join("containers/rebooted/container.json");
    let mut r: ContainerRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    r.detached.as_mut().unwrap().boot_id = "a-boot-before-this-one".into();
    std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
    assert_eq!(r.observed_status(), ContainerStatus::Stopped);
    // The next command's runtime reconciles it.
    let rt = runtime(&f.root, "native").unwrap();
    let r = record(&rt, "rebooted");
    assert_eq!(
        (r.status, r.exit_code),
        (ContainerStatus::Stopped, Some(255))
    );
    let again = rt
        .load("rebooted")
        .unwrap()
        .start_detached(&default_options())
        .unwrap();
    assert_eq!(again.status, ContainerStatus::Running);
    // Its log goes on from before the reboot.
    eventually("the second run's output", || {
        let (entries, _) = rt.logs("rebooted", &LogQuery::default()).unwrap();
        (texts(&entries, "stdout") == ["up\n", "up\n"]).then_some(())
    });
    rt.stop("rebooted", GRACE).unwrap();
    rt.delete("rebooted").unwrap();
    assert_no_cgroups("rebooted");
}

fn kill9(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
}

/// A program without the hook: the monitor never reports, and the start
/// fails with a typed error instead of hanging; the container stays
/// created.
#[test]
fn a_monitor_without_the_hook_fails_cleanly() {
    let Some((f, rt)) = native() else { return };
    let c = rt
        .container(Rootfs::Directory(f.rootfs.clone()))
        .cmd(["/bin/true"])
        .create()
        .unwrap();
    let id = c.id().to_owned();
    let mut o = default_options();
    o.monitor_command = Some(vec!["/bin/true".into()]);
    let e = c.start_detached(&o).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(e, image_runtime::DetachError::MonitorDied { .. }),
        "{e:?}"
    );
    assert_eq!(record(&rt, &id).status, ContainerStatus::Created);
    rt.delete(&id).unwrap();
}

/// A writer into a buffer shared with the test.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits (bounded) until the buffer holds `s`.
    fn wait_for(&self, s: &str) {
        eventually(&format!("{s:?} in the output"), || {
            self.text().contains(s).then_some(())
        });
    }
}

/// An attachment copying the output into a buffer on a thread: the
/// buffer, its input, and the thread giving how the attachment ended.
fn attached(
    rt: &Runtime,
    id: &str,
) -> (
    Shared,
    AttachInput,
    std::thread::JoinHandle<image_runtime::monitor::AttachEnd>,
) {
    let a = rt.attach_stream(id).unwrap();
    let input = a.input().unwrap();
    let out = Shared::default();
    let mut sink = out.clone();
    let t = std::thread::spawn(move || a.copy_output(&mut sink.clone(), &mut sink).unwrap());
    (out, input, t)
}

/// Creates container `id` of `sh -c script` with stdin (`-i`; `tty`:
/// and a terminal, `-t`) and starts it detached; its ID.
fn interactive(rt: &Runtime, f: &Fixture, id: &str, script: &str, tty: bool) -> String {
    let b = rt
        .container(Rootfs::Directory(f.rootfs.clone()))
        .id(id)
        .cmd(["/bin/sh", "-c", script]);
    let mut o = b.run_options();
    o.stdin = true;
    o.tty = tty;
    b.options(o)
        .create()
        .unwrap()
        .start_detached(&default_options())
        .unwrap()
        .id
}

/// A detached container made with stdin (`run -d -i`) under native, runc
/// and crun: two attachers both see what `cat` echoes of the lines one of
/// them sends; an attacher that types the detach keys (ctrl-p ctrl-q)
/// leaves it running (what followed the keys never reaches it); one that
/// attaches again and reaches the end of its input closes the
/// container's stdin, so `cat` ends and every attacher gets the exit code.
#[test]
fn attach_sends_stdin_detaches_and_reattaches_under_each_backend() {
    if !common::ready(&[]) {
        return;
    }
    let f = fixture();
    for kind in backends() {
        let rt = runtime(&f.root, kind).unwrap();
        let id = interactive(
            &rt,
            &f,
            &format!("{kind}-cat"),
            "cat; echo done >&2; exit 5",
            false,
        );
        // The monitor's socket: a socket, for root only.
        let socket = f.root.join("containers").join(&id).join("attach");
        let meta = std::fs::symlink_metadata(&socket).unwrap();
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        assert!(meta.file_type().is_socket(), "{kind}");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "{kind}");
        let (first, input, first_end) = attached(&rt, &id);
        let (second, _, second_end) = attached(&rt, &id);
        input.write(b"one\n").unwrap();
        first.wait_for("one\n");
        second.wait_for("one\n");

        // Typed keys: input up to the keys, then detached.
        let keys: Box<dyn std::io::Read + Send> =
            Box::new(std::io::Cursor::new(b"two\n\x10\x11three\n".to_vec()));
        let (mut out, mut err) = (Shared::default(), Shared::default());
        let end = rt
            .attach_io(&id, Some(keys), &mut out, &mut err, DetachKeys::default())
            .unwrap();
        assert_eq!(end, image_runtime::monitor::AttachEnd::Detached, "{kind}");
        first.wait_for("two\n");
        assert_eq!(rt.try_wait(&id).unwrap(), None, "{kind}: still running");

        // Again; the end of this input closes the container's stdin.
        let rest: Box<dyn std::io::Read + Send> =
            Box::new(std::io::Cursor::new(b"four\n".to_vec()));
        let (mut out, mut err) = (Shared::default(), Shared::default());
        let end = rt
            .attach_io(&id, Some(rest), &mut out, &mut err, DetachKeys::default())
            .unwrap();
        assert_eq!(
            end,
            image_runtime::monitor::AttachEnd::Exited(Some(5)),
            "{kind}"
        );
        assert!(out.text().contains("four\n"), "{kind}: {:?}", out.text());
        assert_eq!(err.text(), "done\n", "{kind}");
        for (seen, end) in [(first, first_end), (second, second_end)] {
            assert_eq!(
                end.join().unwrap(),
                image_runtime::monitor::AttachEnd::Exited(Some(5)),
                "{kind}"
            );
            // stdout and stderr come through two pipes, each pumped on
            // its own: `done` may come before or after `four`.
            let seen = seen.text();
            assert!(
                ["one\ntwo\nfour\ndone\n", "one\ntwo\ndone\nfour\n"].contains(&seen.as_str()),
                "{kind}: {seen:?}"
            );
        }
        let (logged, _) = rt.logs(&id, &LogQuery::default()).unwrap();
        assert_eq!(
            texts(&logged, "stdout"),
            ["one\n", "two\n", "four\n"],
            "{kind}"
        );
        rt.delete(&id).unwrap();
        assert_no_cgroups(&id);
    }
}

/// `run -d -t -i` under native, runc and crun: an attacher's window size
/// reaches the container's terminal (`stty size` inside), its input goes
/// through the terminal, and the exit code comes back.
#[test]
fn attach_sizes_the_terminal_under_each_backend() {
    if !common::ready(&[]) {
        return;
    }
    let f = fixture();
    for kind in backends() {
        let rt = runtime(&f.root, kind).unwrap();
        let id = interactive(
            &rt,
            &f,
            &format!("{kind}-tty"),
            "read x; stty size; exit 3",
            true,
        );
        let (seen, input, end) = attached(&rt, &id);
        input.resize(33, 77).unwrap();
        input.write(b"go\n").unwrap();
        assert_eq!(
            end.join().unwrap(),
            image_runtime::monitor::AttachEnd::Exited(Some(3)),
            "{kind}"
        );
        assert!(seen.text().contains("33 77"), "{kind}: {:?}", seen.text());
        rt.delete(&id).unwrap();
        assert_no_cgroups(&id);
    }
}
