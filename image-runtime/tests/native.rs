//! The native backend against the real kernel, as root: probes compared
//! with runc, exit codes, signals, limits, descriptors, `/proc/self/exe`,
//! exec, a terminal, and 50 containers started at once from a tokio
//! runtime. A missing tool skips a test loudly unless CI=true, where it
//! fails. Every test removes what it made (cgroups, mounts, temp dirs).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image_core::{Classify, ErrorKind};
use image_overlay::mount::{Mounter, SysMounter};
use image_runtime::backend::{self, Backend};
use image_runtime::{
    BackendError, Exit, NativeOptions, NativeRuntime, OciRuntime, Rootfs, RunOptions, Runtime,
    RuntimeKind, Status, Stdio,
};
use serde_json::{json, Value};

const APPLETS: &[&str] = &[
    "sh", "id", "env", "hostname", "ls", "cat", "pwd", "echo", "mount", "sleep", "touch", "test",
    "sort", "grep", "true", "dd", "readlink", "seq", "tty", "wc", "head", "kill",
];

use common::{
    assert_no_cgroups, assert_same_probes, assert_unmounted, image_config, mount_set,
    probe_outputs, ready, split_mounts, TIMEOUT,
};

fn busybox_rootfs(dir: &Path) {
    common::busybox_rootfs(dir, APPLETS);
}

/// A bundle (busybox rootfs + config.json) in a temp dir, its spec as JSON.
struct Bundle {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    spec: Value,
}

/// Containers a failing test left are deleted with it (cgroups included).
impl Drop for Bundle {
    fn drop(&mut self) {
        for name in ["native", "native-init"] {
            let dir = self.tmp.path().join(name);
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            let be = NativeRuntime::new(&dir).unwrap();
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = n.strip_suffix(".json").filter(|_| !n.starts_with('.')) {
                    let _ = be.delete(id, true);
                }
            }
        }
    }
}

impl Bundle {
    fn new(opts: &RunOptions) -> Bundle {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bundle");
        busybox_rootfs(&dir.join("rootfs"));
        let spec = image_runtime::bundle::export(&dir, &image_config(), opts).unwrap();
        Bundle {
            dir,
            spec: serde_json::to_value(&spec).unwrap(),
            tmp,
        }
    }

    /// Writes config.json with these args (and changes made by `f`).
    fn write(&self, args: &[&str], f: impl FnOnce(&mut Value)) {
        let mut s = self.spec.clone();
        s["process"]["args"] = json!(args);
        f(&mut s);
        std::fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(&s).unwrap(),
        )
        .unwrap();
    }

    fn native(&self) -> NativeRuntime {
        NativeRuntime::new(&self.tmp.path().join("native")).unwrap()
    }
}

/// Nothing of container `id` left: no cgroups, no mounts under `dir`.
fn assert_clean(id: &str, dir: &Path) {
    assert_no_cgroups(id);
    assert_unmounted(dir);
}

fn run(be: &dyn Backend, id: &str, bundle: &Bundle, stdio: Stdio) -> Exit {
    be.create(id, &bundle.dir).unwrap();
    let mut p = be.start(id, &bundle.dir, stdio).unwrap();
    let exit = backend::wait_timeout(&mut *p, TIMEOUT)
        .unwrap()
        .expect("finished in time");
    drop(p);
    be.delete(id, true).unwrap();
    assert_clean(id, bundle.tmp.path());
    exit
}

fn sh(b: &Bundle, be: &dyn Backend, id: &str, script: &str) -> Exit {
    b.write(&["sh", "-c", script], |_| {});
    run(be, id, b, Stdio::capture())
}

#[test]
fn native_probes_match_runc() {
    if !ready(&["runc"]) {
        return;
    }
    let mut opts = RunOptions::new();
    opts.hostname = Some("probe-host".into());
    let b = Bundle::new(&opts);
    let runc = OciRuntime::new(RuntimeKind::Runc, &b.tmp.path().join("runc")).unwrap();
    let native = b.native();
    let backends: [(&str, &dyn Backend); 2] = [("runc", &runc), ("native", &native)];
    let mut results = Vec::new();
    for (name, be) in backends {
        results.push(probe_outputs(name, |i, probe| {
            b.write(probe, |_| {});
            run(be, &format!("probe-{name}-{i}"), &b, Stdio::capture())
        }));
    }
    assert_same_probes(&results[0], &results[1]);
    assert!(results[1][0].starts_with("uid=1000(app) gid=1000(app)"));
    assert_eq!(results[1][3], "probe-host\n");
    // Mounts: the same comparison as runc against crun (tests/runtime.rs):
    // exact for plain mounts, (mount point, read-only) for masked and
    // read-only paths.
    let linux = &b.spec["linux"];
    let list = |k: &str| -> BTreeSet<String> {
        linux[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let (masked, readonly) = (list("maskedPaths"), list("readonlyPaths"));
    let split = |set| split_mounts(set, &masked, &readonly);
    let (runc_plain, runc_special) = split(mount_set(&results[0][5]));
    let (native_plain, native_special) = split(mount_set(&results[1][5]));
    assert_eq!(
        runc_plain, native_plain,
        "mounts differ:\nrunc:\n{}\nnative:\n{}",
        results[0][5], results[1][5]
    );
    assert_eq!(
        runc_special, native_special,
        "masked/read-only paths differ"
    );
    // Exactly the same, flags included, in fact.
    assert_eq!(mount_set(&results[0][5]), mount_set(&results[1][5]));
}

/// The backend conformance suite (`image_runtime::testsuite`) against
/// `be` on a busybox bundle; then nothing of the suite's containers is
/// left (cgroups, mounts).
fn conforms<B: Backend>(b: &Bundle, open: impl Fn() -> B) {
    image_testsupport::runtime::backend(
        &open,
        |args| {
            b.write(args, |_| {});
            b.dir.clone()
        },
        TIMEOUT,
    );
    let name = open().name().to_owned();
    for check in ["exit-42", "out-err", "killed"] {
        assert_clean(&format!("suite-{name}-{check}"), b.tmp.path());
    }
}

#[test]
fn native_conforms() {
    if !ready(&[]) {
        return;
    }
    let b = Bundle::new(&RunOptions::new());
    conforms(&b, || b.native());
}

#[test]
fn runc_and_crun_conform() {
    for kind in [RuntimeKind::Runc, RuntimeKind::Crun] {
        if !ready(&[kind.program()]) {
            continue;
        }
        let b = Bundle::new(&RunOptions::new());
        let state = b.tmp.path().join(kind.program());
        conforms(&b, || OciRuntime::new(kind, &state).unwrap());
    }
}

/// Container `id` of `b` running `sleep 100` on `be`.
fn start_sleeping(b: &Bundle, be: &NativeRuntime, id: &str) -> Box<dyn backend::Process> {
    b.write(&["sleep", "100"], |_| {});
    be.create(id, &b.dir).unwrap();
    be.start(id, &b.dir, Stdio::capture()).unwrap()
}

#[test]
fn native_stop_init_and_refusals() {
    if !ready(&[]) {
        return;
    }
    let b = Bundle::new(&RunOptions::new());
    let be = b.native();

    // wait_timeout (a pidfd slept on, no polling): a process still running
    // at the deadline is killed and reaped, and None returned.
    let mut p = start_sleeping(&b, &be, "late");
    let pid = p.pid().unwrap();
    let late = backend::wait_timeout(&mut *p, Duration::from_millis(200)).unwrap();
    assert!(late.is_none());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(be.state("late").unwrap().status, Status::Stopped);
    drop(p);
    be.delete("late", true).unwrap();

    // stop: sleep as pid 1 ignores SIGTERM, so it is killed after the timeout.
    let mut p = start_sleeping(&b, &be, "stopped");
    let t = Instant::now();
    be.stop("stopped", Duration::from_millis(300)).unwrap();
    let exit = backend::wait_timeout(&mut *p, TIMEOUT).unwrap().unwrap();
    assert_eq!(exit.status.code(), 137);
    assert!(t.elapsed() >= Duration::from_millis(300));
    // The native backend keeps a stopped container until it is deleted
    // (the suite also admits a runtime that forgets it at once).
    assert_eq!(be.state("stopped").unwrap().status, Status::Stopped);
    drop(p);
    be.delete("stopped", true).unwrap();

    // With --init, SIGTERM is forwarded to sleep (not pid 1), which dies of it;
    // and orphans are reaped.
    let init = NativeRuntime::with_options(&b.tmp.path().join("native-init"), {
        let mut o = NativeOptions::default();
        o.init = true;
        o
    })
    .unwrap();
    b.write(&["sh", "-c", "sleep 100 & echo $$; exec sleep 100"], |_| {});
    init.create("init", &b.dir).unwrap();
    let mut p = init.start("init", &b.dir, Stdio::capture()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    init.stop("init", Duration::from_secs(20)).unwrap();
    let exit = backend::wait_timeout(&mut *p, TIMEOUT).unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(exit.status.code(), 128 + 15, "{}", exit.stderr_str());
    // The program runs as pid 2 under the reaper.
    assert_eq!(exit.stdout_str(), "2\n");
    drop(p);
    init.delete("init", true).unwrap();
    assert_clean("init", b.tmp.path());

    // Typed errors: no such program.
    b.write(&["nosuchprog"], |_| {});
    be.create("missing", &b.dir).unwrap();
    let e = be.start("missing", &b.dir, Stdio::capture()).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(e.to_string().contains("executable file not found"), "{e}");
    be.delete("missing", true).unwrap();
    assert_clean("missing", b.tmp.path());
    // A seccomp action the native backend cannot install (a user-space
    // notifier) is refused at create, not ignored.
    b.write(&["true"], |s| {
        s["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_NOTIFY"})
    });
    let e = be.create("seccomp", &b.dir).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, BackendError::Seccomp { .. }), "{e}");
    assert_eq!(e.kind(), image_core::ErrorKind::Unsupported);
}

#[test]
fn native_memory_limit_kills_and_pids_limit_bounds_a_fork_bomb() {
    if !ready(&[]) {
        return;
    }
    let mut opts = RunOptions::new();
    opts.user = Some("0".into());
    let b = Bundle::new(&opts);
    let be = b.native();
    // 64 MiB buffer filled from /dev/zero under a 16 MiB limit.
    b.write(
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
        |s| {
            s["linux"]["resources"]["memory"] = json!({"limit": 16 << 20});
        },
    );
    let exit = run(&be, "oom", &b, Stdio::capture());
    assert_eq!(exit.status.code(), 137, "{}", exit.stderr_str());
    // The same without the limit works.
    b.write(
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
        |_| {},
    );
    let exit = run(&be, "no-oom", &b, Stdio::capture());
    assert!(exit.status.success(), "{}", exit.stderr_str());

    // A fork bomb under pids.max = 10: never more than 10 processes (the
    // bomb, an inner shell, dies at its first failed fork; the outer one
    // counts with builtins only).
    b.write(
        &[
            "sh",
            "-c",
            "sh -c 'for i in $(seq 1 60); do sleep 30 & done' 2>/dev/null; set -- /proc/[0-9]*; echo $#",
        ],
        |s| s["linux"]["resources"]["pids"] = json!({"limit": 10}),
    );
    let exit = run(&be, "bomb", &b, Stdio::capture());
    let n: u32 = exit.stdout_str().trim().parse().unwrap_or(999);
    assert!(
        (5..=10).contains(&n),
        "{n} processes: {} {} {:?}",
        exit.stdout_str(),
        exit.stderr_str(),
        exit.status
    );
}

#[test]
fn native_closes_leaked_fds_and_proc_self_exe_is_the_containers() {
    if !ready(&[]) {
        return;
    }
    let b = Bundle::new(&RunOptions::new());
    let be = b.native();
    // A descriptor opened without O_CLOEXEC on a host directory.
    let leaked = rustix::fs::open(
        b.tmp.path(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    use std::os::fd::AsRawFd;
    let n = leaked.as_raw_fd();
    assert!(!rustix::io::fcntl_getfd(&leaked)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC));
    let exit = sh(&b, &be, "fds", &format!(
        "ls /proc/self/fd | sort -n | while read f; do echo -n \"$f \"; done; echo; \
         test -e /proc/self/fd/{n} && echo LEAKED {n}; cd /proc/self/fd/{n} 2>/dev/null && echo ESCAPED"
    ));
    // ls's own directory descriptor is 3; nothing else beyond 0-2.
    assert_eq!(exit.stdout_str(), "0 1 2 3 \n", "{}", exit.stderr_str());
    drop(leaked);

    // /proc/self/exe and /proc/1/exe point to the container's binary, and
    // writing to it from inside fails (the binary is running) and cannot
    // reach the host's binaries.
    let host_exe = std::env::current_exe().unwrap();
    let before = std::fs::read(&host_exe).unwrap();
    let exit = sh(
        &b,
        &be,
        "exe",
        "readlink /proc/1/exe; readlink /proc/self/exe; \
        echo x 2>/dev/null >> /proc/1/exe && echo WROTE || echo refused; \
        echo x 2>/dev/null >> /proc/self/exe && echo WROTE || echo refused",
    );
    assert_eq!(
        exit.stdout_str(),
        "/bin/busybox\n/bin/busybox\nrefused\nrefused\n",
        "{}",
        exit.stderr_str()
    );
    assert_eq!(std::fs::read(&host_exe).unwrap(), before);
    // Even as root in the container, writes land in the container's own
    // copy (here: the rootfs) when it is not running.
    let md = std::fs::metadata(b.dir.join("rootfs/bin/busybox")).unwrap();
    assert_eq!(md.len(), std::fs::metadata("/bin/busybox").unwrap().len());
}

#[test]
fn native_exec_joins_a_running_container_and_tty() {
    if !ready(&[]) {
        return;
    }
    let mut opts = RunOptions::new();
    opts.hostname = Some("exec-host".into());
    let b = Bundle::new(&opts);
    let be = b.native();
    b.write(
        &["sh", "-c", "echo hello > /tmp/mark; exec sleep 100"],
        |_| {},
    );
    be.create("target", &b.dir).unwrap();
    let mut p = be.start("target", &b.dir, Stdio::capture()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let spec: image_core::oci_spec::runtime::Spec = serde_json::from_value(b.spec.clone()).unwrap();
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "hostname; cat /tmp/mark; cat /proc/1/comm; id -u; pwd".into(),
    ]));
    let mut e = be
        .exec("target", &b.dir, &process, Stdio::capture())
        .unwrap();
    let exit = backend::wait_timeout(&mut *e, TIMEOUT).unwrap().unwrap();
    assert_eq!(
        exit.stdout_str(),
        "exec-host\nhello\nsleep\n1000\n/work/dir\n",
        "{}",
        exit.stderr_str()
    );
    drop(e);
    // The host's file is not the container's /tmp/mark.
    assert!(b.dir.join("rootfs/tmp/mark").exists());
    p.kill_now();
    drop(p);
    be.delete("target", true).unwrap();
    assert_clean("target", b.tmp.path());
    assert!(be
        .exec("target", &b.dir, &process, Stdio::capture())
        .is_err());

    // A terminal: the slave is the controlling terminal, stdin and stdout.
    b.write(
        &[
            "sh",
            "-c",
            "test -t 0 && test -t 1 && echo both-tty; echo ctty > /dev/tty",
        ],
        |s| {
            s["process"]["terminal"] = json!(true);
        },
    );
    let exit = run(&be, "tty", &b, Stdio::capture());
    let out = exit.stdout_str().replace('\r', "");
    // fd 0 and 1 are the terminal, and it is the controlling one
    // (/dev/tty opens). Its name is the caller's devpts (see NOTES.md).
    assert_eq!(out, "both-tty\nctty\n");

    // A terminal's input from a descriptor (a pipe) reaches the container
    // through the terminal (it once read the caller's own stdin instead).
    b.write(&["sh", "-c", "read x; echo got-$x"], |s| {
        s["process"]["terminal"] = json!(true);
    });
    let (r, w) = rustix::pipe::pipe().unwrap();
    std::io::Write::write_all(&mut std::fs::File::from(w), b"typed\n").unwrap();
    let stdio = Stdio {
        stdin: image_runtime::Input::Fd(r),
        ..Stdio::capture()
    };
    let exit = run(&be, "tty-fd", &b, stdio);
    assert!(exit.stdout_str().contains("got-typed"), "{exit:?}");
}

/// The process's groups, as Docker, containerd and buildah set them: the
/// primary group first, then every `/etc/group` entry naming the user
/// (only when no group is given), then `--group-add`; the same under the
/// native backend, runc and crun. `id -G` prints them with the gid; the
/// kernel's own list (`Groups:`, sorted) shows the primary group is one.
#[test]
fn supplementary_groups_hold_the_primary_group_and_etc_group_on_every_backend() {
    if !ready(&[]) {
        return;
    }
    let script = "id -G; grep '^Groups:' /proc/self/status";
    // (user, --group-add, `id -G`, the kernel's sorted list)
    let cases: [(&str, &[u32], &str, &str); 4] = [
        ("app", &[], "1000 10 50", "10 50 1000"),
        ("app", &[7], "1000 10 50 7", "7 10 50 1000"),
        ("app:50", &[], "50", "50"),
        ("1000", &[], "1000 10 50", "10 50 1000"),
    ];
    for (user, extra, id_g, kernel) in cases {
        let mut opts = RunOptions::new();
        opts.user = Some(user.into());
        opts.additional_gids = extra.to_vec();
        let b = Bundle::new(&opts);
        let mut backends: Vec<(&str, Box<dyn Backend>)> = vec![("native", Box::new(b.native()))];
        for kind in [RuntimeKind::Runc, RuntimeKind::Crun] {
            if ready(&[kind.program()]) {
                let state = b.tmp.path().join(kind.program());
                backends.push((
                    kind.program(),
                    Box::new(OciRuntime::new(kind, &state).unwrap()),
                ));
            }
        }
        for (name, be) in &backends {
            let exit = sh(&b, &**be, &format!("groups-{name}"), script);
            let out = exit.stdout_str();
            assert!(
                exit.status.success(),
                "{name} {user}: {out} {}",
                exit.stderr_str()
            );
            let lines: Vec<&str> = out.lines().collect();
            // busybox prints the gid, then the kernel's list without it.
            let listed: BTreeSet<&str> = lines[0].split_whitespace().collect();
            let want: BTreeSet<&str> = id_g.split_whitespace().collect();
            assert_eq!(listed, want, "{name} {user}: {out}");
            let got: Vec<&str> = lines[1]["Groups:".len()..].split_whitespace().collect();
            let want: Vec<&str> = kernel.split_whitespace().collect();
            assert_eq!(got, want, "{name} {user}: {out}");
        }
    }
}

#[test]
fn native_through_the_container_lifecycle() {
    if !ready(&[]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let root = tmp.path().join("state");
    let rt = Runtime::new(&root, NativeRuntime::new(&root.join("native")).unwrap()).unwrap();
    let c = rt
        .container(Rootfs::Directory(rootfs.clone()))
        .run_config(image_config())
        .cmd(["sh", "-c", "id -u; echo $FOO; pwd; cat /etc/hostname"])
        .create()
        .unwrap();
    let id = c.id().to_owned();
    let (c, exit) = c.run(Stdio::capture(), TIMEOUT).unwrap();
    let exit = exit.unwrap();
    assert_eq!(
        exit.stdout_str(),
        format!("1000\nfrom-image\n/work/dir\n{}\n", &id[..12])
    );
    assert_eq!(rt.backend().name(), "native");
    c.delete().unwrap();
    assert_clean(&id, tmp.path());
    assert!(rt.list().unwrap().is_empty());
}

#[test]
fn native_user_namespace_maps_root() {
    if !ready(&[]) {
        return;
    }
    let mut opts = RunOptions::new();
    opts.user = Some("0".into());
    let b = Bundle::new(&opts);
    let be = b.native();
    b.write(
        &[
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map; touch /tmp/x; ls -n /tmp",
        ],
        |s| {
            s["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "user"}));
            s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
            s["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
        },
    );
    let exit = run(&be, "userns", &b, Stdio::capture());
    let out = exit.stdout_str();
    assert!(exit.status.success(), "{out} {}", exit.stderr_str());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "65536"]
    );
}

/// 50 containers started at once from a multi-threaded tokio runtime while
/// other tasks allocate; each on its own overlay of one shared lower dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn native_fifty_concurrent_containers_from_tokio() {
    if !ready(&[]) {
        return;
    }
    let b = std::sync::Arc::new(Bundle::new(&RunOptions::new()));
    let be = std::sync::Arc::new(b.native());
    let lower = b.dir.join("rootfs");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut allocators = Vec::new();
    for _ in 0..3 {
        let stop = stop.clone();
        allocators.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 4096 + i]).collect();
                n += v.len() as u64;
                tokio::task::yield_now().await;
            }
            n
        }));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (b, be, lower) = (b.clone(), be.clone(), lower.clone());
        tasks.push(tokio::spawn(async move {
            let base = b.tmp.path().join(format!("c{i}"));
            let (bundle, upper, work) =
                (base.join("bundle"), base.join("upper"), base.join("work"));
            for d in [&bundle.join("rootfs"), &upper, &work] {
                std::fs::create_dir_all(d).unwrap();
            }
            SysMounter
                .mount(
                    &[common::overlay_mount(&lower, &upper, &work)],
                    &bundle.join("rootfs"),
                )
                .unwrap();
            let mut s = b.spec.clone();
            s["hostname"] = json!(format!("host-{i}"));
            s["root"]["path"] = json!("rootfs");
            s["process"]["user"] = json!({"uid": 0, "gid": 0});
            s["process"]["args"] = json!([
                "sh",
                "-c",
                format!("echo $$ $(hostname); echo mine-{i} > /tmp/f; ls /tmp")
            ]);
            std::fs::write(bundle.join("config.json"), serde_json::to_vec(&s).unwrap()).unwrap();
            let id = format!("many-{i}");
            // Started on the tokio worker thread itself.
            be.create(&id, &bundle).unwrap();
            let mut p = be.start(&id, &bundle, Stdio::capture()).unwrap();
            let exit = tokio::task::spawn_blocking(move || {
                let e = backend::wait_timeout(&mut *p, TIMEOUT).unwrap().unwrap();
                drop(p);
                e
            })
            .await
            .unwrap();
            be.delete(&id, true).unwrap();
            SysMounter.unmount(&bundle.join("rootfs"), false).unwrap();
            (i, id, exit, upper)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(tokio::time::timeout(TIMEOUT * 2, t).await.unwrap().unwrap());
    }
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut allocated = 0;
    for a in allocators {
        allocated += a.await.unwrap();
    }
    assert!(allocated > 0);
    for (i, id, exit, upper) in results {
        assert!(exit.status.success(), "{i}: {}", exit.stderr_str());
        assert_eq!(exit.stdout_str(), format!("1 host-{i}\nf\n"), "{i}");
        assert_eq!(
            std::fs::read_to_string(upper.join("tmp/f")).unwrap(),
            format!("mine-{i}\n")
        );
        assert_clean(&id, b.tmp.path());
    }
    // The shared lower directory saw no write.
    assert!(!lower.join("tmp/f").exists());
    eprintln!("50 containers in {elapsed:?}");
}

/// An image whose `/proc` or `/sys` is a symlink (`/proc -> /tmp`) is
/// refused, as runc and crun refuse it: the masked and read-only paths
/// would not cover a proc mounted elsewhere. A symlinked `/dev` (a tmpfs,
/// like user volumes) is resolved inside the root, as runc's securejoin
/// does, and the container runs.
#[test]
fn native_refuses_proc_and_sys_through_symlinks_like_runc() {
    if !ready(&[]) {
        return;
    }
    let b = Bundle::new(&RunOptions::new());
    let be = b.native();
    let mut peers: Vec<(&str, OciRuntime)> = Vec::new();
    for (name, kind) in [("runc", RuntimeKind::Runc), ("crun", RuntimeKind::Crun)] {
        if image_testsupport::tools::which(name).is_some() {
            peers.push((
                name,
                OciRuntime::new(kind, &b.tmp.path().join(name)).unwrap(),
            ));
        } else {
            eprintln!("SKIPPED comparison with {name}: not installed");
        }
    }
    let rootfs = b.dir.join("rootfs");
    for (dir, target) in [("proc", "/tmp"), ("sys", "tmp"), ("proc", "/nonexistent")] {
        let real = rootfs.join(dir);
        std::fs::remove_dir(&real).unwrap();
        std::os::unix::fs::symlink(target, &real).unwrap();
        b.write(&["true"], |_| {});
        let id = format!("link-{dir}");
        be.create(&id, &b.dir).unwrap();
        let e = match be.start(&id, &b.dir, Stdio::capture()) {
            Ok(mut p) => {
                let exit = backend::wait_timeout(&mut *p, TIMEOUT).unwrap();
                panic!("{dir} -> {target}: started ({exit:?})")
            }
            Err(e) => e,
        };
        // Typed: the class is the rootfs error's (Unsafe), and that error
        // is kept as the source, so a caller can branch on either.
        assert_eq!(e.kind(), ErrorKind::Unsafe, "{dir} -> {target}: {e:?}");
        let text = e.to_string();
        assert!(
            text.contains("must be mounted on an ordinary directory"),
            "{text}"
        );
        match &e {
            BackendError::Rootfs { source, .. } => match &**source {
                image_runtime::rootfs::RootfsError::Symlink { path } => {
                    assert_eq!(path, Path::new(&format!("/{dir}")), "{e:?}")
                }
                other => panic!("{dir} -> {target}: source {other:?}"),
            },
            other => panic!("{dir} -> {target}: {other:?}"),
        }
        assert_eq!(
            std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                .map(ToString::to_string)
                .filter(|m| m.contains("is a symbolic link"))
                .count(),
            1,
            "the message does not repeat its source: {text}"
        );
        be.delete(&id, true).unwrap();
        assert_clean(&id, b.tmp.path());
        for (name, peer) in &peers {
            let pid = format!("{name}-{dir}");
            let refused = peer.create(&pid, &b.dir).is_err()
                || match peer.start(&pid, &b.dir, Stdio::capture()) {
                    Err(_) => true,
                    // runc and crun report a failed init when waited for.
                    Ok(mut p) => backend::wait_timeout(&mut *p, TIMEOUT)
                        .map_or(true, |x| x.is_none_or(|x| !x.status.success())),
                };
            let _ = peer.delete(&pid, true);
            assert!(refused, "{name} ran with {dir} -> {target}");
        }
        std::fs::remove_file(&real).unwrap();
        std::fs::create_dir(&real).unwrap();
    }
    // /tmp itself untouched by a proc mount (the link was refused).
    assert!(std::fs::read_dir(rootfs.join("tmp"))
        .unwrap()
        .next()
        .is_none());

    // /dev as a symlink: resolved inside the root (runc does the same).
    let dev = rootfs.join("dev");
    std::fs::remove_dir(&dev).unwrap();
    std::fs::create_dir(rootfs.join("realdev")).unwrap();
    std::os::unix::fs::symlink("../../../realdev", &dev).unwrap();
    let exit = sh(&b, &be, "link-dev", "test -c /realdev/null && echo ok");
    assert_eq!(exit.stdout_str(), "ok\n");
    std::fs::remove_file(&dev).unwrap();
    std::fs::create_dir(&dev).unwrap();
}

/// A bundle written by someone else with uid or gid `4294967295`
/// (`(uid_t)-1`: setresuid would keep root) or a supplementary gid out of
/// range is refused by the native backend, as runc refuses it.
#[test]
fn native_refuses_ids_out_of_range_in_a_bundle() {
    if !ready(&[]) {
        return;
    }
    let b = Bundle::new(&RunOptions::new());
    let be = b.native();
    for (i, user) in [
        json!({"uid": 4_294_967_295_u64, "gid": 0}),
        json!({"uid": 0, "gid": 4_294_967_295_u64}),
        json!({"uid": 1000, "gid": 1000, "additionalGids": [2_147_483_648_u64]}),
    ]
    .into_iter()
    .enumerate()
    {
        b.write(&["id"], |s| s["process"]["user"] = user.clone());
        let id = format!("ids-{i}");
        // Refused when the bundle is validated, before anything is made.
        let e = be.create(&id, &b.dir).unwrap_err();
        image_testsupport::chain::assert_said_once(&e);
        assert!(e.to_string().contains("out of range 0-2147483647"), "{e}");
        let _ = be.delete(&id, true);
        assert_clean(&id, b.tmp.path());
    }
}

/// The native backend plans from the typed spec: a field it does not
/// implement is refused at create with `Unsupported` naming the field
/// (as seccomp was), never ignored; what runc and crun would do with it
/// (a sysctl, an AppArmor profile, a device node, a blkio weight) the
/// container must not silently go without. runc runs the same bundles.
#[test]
fn native_refuses_each_field_it_does_not_implement_naming_it() {
    if !ready(&[]) {
        return;
    }
    let b = Bundle::new(&RunOptions::new());
    let be = b.native();
    /// The field named, and how the spec gets it.
    type Case = (&'static str, fn(&mut Value));
    let cases: [Case; 6] = [
        ("linux.sysctl", |s| {
            s["linux"]["sysctl"] = json!({"kernel.domainname": "example.org"})
        }),
        ("process.apparmorProfile", |s| {
            s["process"]["apparmorProfile"] = json!("unconfined")
        }),
        (
            "linux.devices",
            |s| {
                s["linux"]["devices"] =
                    json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}])
            },
        ),
        ("linux.resources.blockIO", |s| {
            s["linux"]["resources"]["blockIO"] = json!({"weight": 100})
        }),
        ("hooks", |s| {
            s["hooks"] = json!({"poststop": [{"path": "/bin/true"}]})
        }),
        ("process.oomScoreAdj", |s| {
            s["process"]["oomScoreAdj"] = json!(100)
        }),
    ];
    for (i, (field, change)) in cases.into_iter().enumerate() {
        b.write(&["true"], change);
        let id = format!("field-{i}");
        match be.create(&id, &b.dir) {
            Err(e @ BackendError::Unsupported { what, .. }) => {
                assert!(what.starts_with(field), "{field}: {what}");
                assert_eq!(e.kind(), ErrorKind::Unsupported);
            }
            other => panic!("{field}: {other:?}"),
        }
        let _ = be.delete(&id, true);
        assert_clean(&id, b.tmp.path());
    }
    // The same bundle without them runs.
    b.write(&["true"], |_| {});
    assert_eq!(run(&be, "plain", &b, Stdio::capture()).status.code(), 0);
}
