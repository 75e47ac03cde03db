//! Integration tests against the real runc and crun, as root, with real
//! namespaces, mounts and cgroups. A missing tool skips a test loudly
//! (eprintln) unless CI=true, where it fails.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use image_core::config::RunConfig;
use image_core::{Classify, ErrorKind};
use image_runtime::backend::Backend;
use image_runtime::spec::SpecError;
use image_runtime::state::ContainerStatus;
use image_runtime::LookupError;
use image_runtime::UserError;
use image_runtime::{
    BackendError, ContainerError, Input, OciRuntime, Output, Rootfs, RunOptions, Runtime,
    RuntimeKind, Stdio,
};

/// A writer whose bytes the test can read afterwards.
#[derive(Clone, Default)]
struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const APPLETS: &[&str] = &[
    "sh", "id", "env", "hostname", "ls", "cat", "pwd", "echo", "mount", "sleep", "touch", "test",
    "sort", "grep", "true",
];

use common::{
    assert_no_cgroups, assert_same_probes, assert_unmounted, image_config, mount_count, mount_set,
    pretend_owner_died, probe_outputs, ready, split_mounts, TIMEOUT,
};

/// The shared busybox root filesystem plus a file without the exec bit.
fn busybox_rootfs(dir: &Path) {
    common::busybox_rootfs(dir, APPLETS);
    std::fs::write(dir.join("bin/notexec"), "#!/bin/sh\n").unwrap();
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    rootfs: PathBuf,
}

/// Whatever a failing test left (mounts, cgroups, runc state) goes with it.
impl Drop for Fixture {
    fn drop(&mut self) {
        if !self.root.exists() {
            return;
        }
        if let Ok(rt) = Runtime::oci(&self.root, RuntimeKind::Runc) {
            for r in rt.list().unwrap_or_default() {
                let _ = rt.delete(&r.id);
            }
        }
    }
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs);
    Fixture {
        root: tmp.path().join("state"),
        rootfs,
        _tmp: tmp,
    }
}

/// Asserts nothing of container `id` is left: mounts, cgroups, state.
fn assert_clean(rt: &Runtime, id: &str) {
    assert_unmounted(rt.root());
    assert_no_cgroups(id);
    assert!(!rt.root().join("containers").join(id).exists());
    assert!(matches!(
        rt.backend().state(id),
        Err(BackendError::NotFound { .. })
    ));
}

fn run_in(
    rt: &Runtime,
    rootfs: Rootfs,
    config: RunConfig,
    opts: RunOptions,
) -> (String, image_runtime::Exit) {
    let c = rt
        .container(rootfs)
        .run_config(config)
        .options(opts)
        .create()
        .unwrap();
    let id = c.id().to_owned();
    let (c, exit) = c.run(Stdio::capture(), TIMEOUT).unwrap();
    let exit = exit.expect("container finished in time");
    assert_eq!(c.status(), ContainerStatus::Stopped);
    c.delete().unwrap();
    assert_clean(rt, &id);
    (id, exit)
}

/// Waits (up to [`TIMEOUT`]) until the backend reports container `id` running.
fn wait_until_running(rt: &Runtime, id: &str) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while rt.backend().state(id).ok().map(|s| s.status) != Some(image_runtime::Status::Running) {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sh(script: &str) -> RunOptions {
    let mut o = RunOptions::new();
    o.cmd = Some(vec!["sh".into(), "-c".into(), script.into()]);
    o
}

fn sees_image_settings(kind: RuntimeKind) {
    if !ready(&[kind.program()]) {
        return;
    }
    let f = fixture();
    let rt = Runtime::oci(&f.root, kind).unwrap();
    let (id, exit) = run_in(
        &rt,
        Rootfs::Directory(f.rootfs.clone()),
        image_config(),
        sh("id; pwd; echo FOO=$FOO HOME=$HOME; echo pid=$$; hostname; cat /etc/hostname; ulimit -n; grep CapBnd /proc/self/status; cat /proc/self/cgroup"),
    );
    let out = exit.stdout_str();
    assert!(exit.status.success(), "{out} {}", exit.stderr_str());
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("uid=1000(app) gid=1000(app) groups="),
        "{out}"
    );
    assert!(
        lines[0].contains("10(wheel)") && lines[0].contains("50(staff)"),
        "{out}"
    );
    assert_eq!(lines[1], "/work/dir");
    assert_eq!(lines[2], "FOO=from-image HOME=/home/app");
    assert_eq!(lines[3], "pid=1");
    assert_eq!(lines[4], &id[..12]);
    assert_eq!(lines[5], &id[..12]);
    // RLIMIT_NOFILE: Docker's 1048576, lowered to the host's hard limit.
    let host_hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    let want = host_hard.map_or(1_048_576, |h| h.min(1_048_576));
    assert_eq!(lines[6], want.to_string());
    // Docker's 14 default capabilities.
    assert_eq!(
        lines[7].split_whitespace().nth(1),
        Some("00000000a80425fb"),
        "{out}"
    );
    // Its cgroups sit under ours, in every v1 hierarchy (memory's is not the root here).
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    for line in own.lines().filter(|l| !l.starts_with("0::")) {
        let (prefix, path) = line.rsplit_once(':').unwrap();
        let want = format!("{}/image-runtime-{id}", path.trim_end_matches('/'));
        assert!(
            lines[6..]
                .iter()
                .any(|l| l.starts_with(prefix) && l.rsplit_once(':').unwrap().1.starts_with(&want)),
            "{kind:?}: no cgroup under {prefix}:{path}: {out}"
        );
    }
    // The working directory was created in the root, root-owned, 0755.
    let md = std::fs::metadata(f.rootfs.join("work/dir")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((md.uid(), md.mode() & 0o7777), (0, 0o755));
}

#[test]
fn runc_container_sees_image_env_workdir_user_pid1_hostname() {
    sees_image_settings(RuntimeKind::Runc);
}

#[test]
fn crun_container_sees_image_env_workdir_user_pid1_hostname() {
    sees_image_settings(RuntimeKind::Crun);
}

#[test]
fn exit_codes_and_signals_pass_through() {
    if !ready(&["runc"]) {
        return;
    }
    let f = fixture();
    let rt = Runtime::oci(&f.root, RuntimeKind::Runc).unwrap();
    let (_, exit) = run_in(
        &rt,
        Rootfs::Directory(f.rootfs.clone()),
        image_config(),
        sh("exit 42"),
    );
    assert_eq!(exit.status.code(), 42);

    // Killed by a signal: 128 + 9.
    let c = rt
        .container(Rootfs::Directory(f.rootfs.clone()))
        .run_config(image_config())
        .cmd(["sleep", "100"])
        .create()
        .unwrap();
    let id = c.id().to_owned();
    let mut running = c.start(Stdio::capture()).unwrap();
    // Wait until runc has the container running, then kill it from "another process".
    wait_until_running(&rt, &id);
    assert!(running.pid().is_some());
    let listed = Runtime::oci(&f.root, RuntimeKind::Runc)
        .unwrap()
        .list()
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, ContainerStatus::Running);
    rt.kill(&id, image_runtime::Signal::KILL).unwrap();
    let exit = running.wait_timeout(TIMEOUT).unwrap().unwrap();
    assert_eq!(exit.status.code(), 137);
    assert_eq!(exit.status.signal(), Some(9));
    running.delete().unwrap();
    assert_clean(&rt, &id);
}

#[test]
fn stdin_streams_and_volumes() {
    if !ready(&["runc"]) {
        return;
    }
    let f = fixture();
    let rt = Runtime::oci(&f.root, RuntimeKind::Runc).unwrap();
    let shared = f.root.parent().unwrap().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("in"), "from host\n").unwrap();
    let mut opts =
        sh("cat; cat /v/in; echo out > /v/out; echo err >&2; touch /ro/x || echo ro-refused");
    opts.volumes = vec![
        format!("{}:/v", shared.display()).parse().unwrap(),
        format!("{}:/ro:ro", shared.display()).parse().unwrap(),
    ];
    opts.user = Some("0".into());
    let c = rt
        .container(Rootfs::Directory(f.rootfs.clone()))
        .run_config(image_config())
        .options(opts)
        .create()
        .unwrap();
    let id = c.id().to_owned();
    let streamed = SharedBuf::default();
    let stdio = Stdio {
        stdin: Input::Bytes(b"piped in\n".to_vec()),
        stdout: Output::Capture,
        stderr: Output::Stream(Box::new(streamed.clone())),
    };
    let (c, exit) = c.run(stdio, TIMEOUT).unwrap();
    let exit = exit.unwrap();
    assert_eq!(exit.stdout_str(), "piped in\nfrom host\nro-refused\n");
    assert!(exit.stderr.is_empty());
    assert!(String::from_utf8_lossy(&streamed.0.lock().unwrap()).contains("err\n"));
    assert_eq!(
        std::fs::read_to_string(shared.join("out")).unwrap(),
        "out\n"
    );
    c.delete().unwrap();
    assert_clean(&rt, &id);
}

#[test]
fn read_only_rootfs_refuses_writes() {
    if !ready(&["runc"]) {
        return;
    }
    let f = fixture();
    let rt = Runtime::oci(&f.root, RuntimeKind::Runc).unwrap();
    let mut opts = sh("touch /data/new 2>/dev/null && echo wrote || echo refused");
    opts.read_only = true;
    let (_, exit) = run_in(
        &rt,
        Rootfs::Directory(f.rootfs.clone()),
        image_config(),
        opts,
    );
    assert_eq!(exit.stdout_str(), "refused\n");
    assert!(!f.rootfs.join("data/new").exists());
}

/// An overlay of `upper` on `lower` as a root filesystem, `upper` and
/// `work` created.
fn overlay(lower: &Path, upper: &Path, work: &Path) -> Rootfs {
    std::fs::create_dir_all(upper).unwrap();
    std::fs::create_dir_all(work).unwrap();
    Rootfs::Mounts(vec![common::overlay_mount(lower, upper, work)])
}

#[test]
fn two_containers_do_not_see_each_others_writes() {
    if !ready(&["runc"]) {
        return;
    }
    let f = fixture();
    let rt = Runtime::oci(&f.root, RuntimeKind::Runc).unwrap();
    let base = f.root.parent().unwrap();
    let copy = base.join("rootfs2");
    busybox_rootfs(&copy);

    // Two copies of a plain directory.
    let (_, a) = run_in(
        &rt,
        Rootfs::Directory(f.rootfs.clone()),
        image_config(),
        sh("echo a > /tmp/mine; ls /tmp"),
    );
    let (_, b) = run_in(&rt, Rootfs::Directory(copy), image_config(), sh("ls /tmp"));
    assert_eq!(a.stdout_str(), "mine\n");
    assert_eq!(b.stdout_str(), "");

    // Two overlay mounts on one lower directory: writes land in each upper only.
    let as_root = |script: &str| {
        let mut o = sh(script);
        o.user = Some("root".into());
        o
    };
    let ro = overlay(&f.rootfs, &base.join("u1"), &base.join("w1"));
    let (_, a) = run_in(
        &rt,
        ro,
        image_config(),
        as_root("echo a > /data/a; echo changed > /data/readme; cat /data/*"),
    );
    assert_eq!(a.stdout_str(), "a\nchanged\n");
    let ro = overlay(&f.rootfs, &base.join("u2"), &base.join("w2"));
    let (_, b) = run_in(
        &rt,
        ro,
        image_config(),
        as_root("ls /data; cat /data/readme"),
    );
    assert_eq!(b.stdout_str(), "readme\nlower\n");
    assert_eq!(
        std::fs::read_to_string(base.join("u1/data/a")).unwrap(),
        "a\n"
    );
    assert_eq!(
        std::fs::read_to_string(f.rootfs.join("data/readme")).unwrap(),
        "lower\n"
    );
    assert!(!f.rootfs.join("data/a").exists());
    assert!(!base.join("u2/data/a").exists());
}

/// A root filesystem given as image-overlay's mounts is mounted through
/// its `Mounter` as they are: an overlay and a tmpfs stacked below it
/// (`target`, relative to the root; refused while the runtime kept its own
/// mount type), with the tmpfs's flags and size; delete takes both down.
#[test]
fn a_root_of_stacked_mounts_is_mounted_through_the_mounter() {
    if !ready(&["runc"]) {
        return;
    }
    let f = fixture();
    let rt = Runtime::oci(&f.root, RuntimeKind::Runc).unwrap();
    let base = f.root.parent().unwrap();
    let Rootfs::Mounts(mut mounts) = overlay(&f.rootfs, &base.join("u"), &base.join("w")) else {
        unreachable!("overlay() gives mounts")
    };
    mounts.push(image_overlay::mount::Mount {
        fs_type: "tmpfs".into(),
        source: "tmpfs".into(),
        target: Some("data".into()),
        options: vec!["nosuid".into(), "size=1m".into(), "mode=0700".into()],
    });
    let mut opts = sh("ls /data; grep ' /data ' /proc/mounts | cut -d' ' -f3,4");
    opts.user = Some("root".into());
    let (_, exit) = run_in(&rt, Rootfs::Mounts(mounts), image_config(), opts);
    assert_eq!(
        exit.stdout_str(),
        "tmpfs rw,nosuid,relatime,size=1024k,mode=700\n",
        "{}",
        exit.stderr_str()
    );
    // The lower directory's /data was hidden, not touched.
    assert!(f.rootfs.join("data/readme").exists());
}

#[test]
fn typed_errors_before_anything_runs() {
    if !ready(&["runc"]) {
        return;
    }
    let f = fixture();
    let rt = Runtime::oci(&f.root, RuntimeKind::Runc).unwrap();
    let dir = || Rootfs::Directory(f.rootfs.clone());
    let create = |config: RunConfig, opts: RunOptions| {
        rt.container(dir())
            .run_config(config)
            .options(opts)
            .create()
    };

    let e = create(RunConfig::default(), RunOptions::new()).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(e, ContainerError::Spec(SpecError::NoCommand)),
        "{e}"
    );
    let mut o = RunOptions::new();
    o.cmd = Some(vec!["nosuchprog".into()]);
    let e = create(image_config(), o).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(e, ContainerError::Lookup(LookupError::NotFound { .. })),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let mut o = RunOptions::new();
    o.cmd = Some(vec!["/bin/notexec".into()]);
    let e = create(image_config(), o).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(e, ContainerError::Lookup(LookupError::NotExecutable { .. })),
        "{e}"
    );
    let mut o = sh("true");
    o.user = Some("nobody".into());
    let e = create(image_config(), o).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(e, ContainerError::User(UserError::UserNotFound { .. })),
        "{e}"
    );
    // Nothing was left behind by the failed creations.
    // A terminal is runc's now (the console socket); an init is not.
    let mut o = sh("true");
    o.init = true;
    let e = create(image_config(), o).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(e, ContainerError::Backend(BackendError::Unsupported { .. })),
        "{e}"
    );
    assert!(rt.list().unwrap().is_empty());
    assert!(std::fs::read_dir(f.root.join("containers"))
        .unwrap()
        .next()
        .is_none());

    let e = OciRuntime::with_binary(RuntimeKind::Runc, Path::new("/nonexistent/runc"), &f.root)
        .unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, BackendError::RuntimeNotFound { .. }));
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn gc_cleans_what_a_crashed_process_left() {
    if !ready(&["runc"]) {
        return;
    }
    let f = fixture();
    let base = f.root.parent().unwrap().to_owned();
    let rt = Runtime::oci(&f.root, RuntimeKind::Runc).unwrap();
    let c = rt
        .container(overlay(&f.rootfs, &base.join("u"), &base.join("w")))
        .run_config(image_config())
        .cmd(["true"])
        .create()
        .unwrap();
    let id = c.id().to_owned();
    assert_eq!(c.upper_dir(), Some(base.join("u")));
    assert_eq!(mount_count(rt.root()), 1);
    pretend_owner_died(&c);
    drop(c);
    let rt2 = Runtime::oci(&f.root, RuntimeKind::Runc).unwrap();
    assert!(rt2.list().unwrap().is_empty());
    assert_clean(&rt2, &id);
}

#[test]
fn runc_and_crun_run_the_same_bundle_alike() {
    if !ready(&["runc", "crun"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    busybox_rootfs(&bundle.join("rootfs"));
    let mut opts = sh("true");
    opts.hostname = Some("probe-host".into());
    let spec = image_runtime::bundle::export(&bundle, &image_config(), &opts).unwrap();
    assert_eq!(spec.root().as_ref().unwrap().path(), Path::new("rootfs"));
    let mut results = Vec::new();
    for kind in [RuntimeKind::Runc, RuntimeKind::Crun] {
        let be = OciRuntime::new(kind, &tmp.path().join(kind.program())).unwrap();
        results.push(probe_outputs(&format!("{kind:?}"), |i, probe| {
            let mut s = spec.clone();
            let mut process = s.process().clone().unwrap();
            process.set_args(Some(probe.iter().map(|a| (*a).to_owned()).collect()));
            s.set_process(Some(process));
            s.save(bundle.join("config.json")).unwrap();
            let id = format!("probe-{}-{i}", kind.program());
            be.create(&id, &bundle).unwrap();
            let mut p = be.start(&id, &bundle, Stdio::capture()).unwrap();
            let exit = image_runtime::backend::wait_timeout(&mut *p, TIMEOUT)
                .unwrap()
                .unwrap();
            be.delete(&id, true).unwrap();
            exit
        }));
    }
    assert_same_probes(&results[0], &results[1]);
    assert!(results[0][0].starts_with("uid=1000(app)"));
    // Mounts: the same set, except how masked and read-only paths are
    // done, where the runtimes differ by design: runc masks files with the
    // container's /dev/null (tmpfs, rw) and keeps /proc's nosuid/nodev/noexec
    // on read-only remounts; crun masks with the host's /dev/null
    // (devtmpfs, ro) and its read-only remounts drop those flags. For those
    // paths, both must cover the same mount points, read-only ones ro.
    let linux = spec.linux().as_ref().unwrap();
    let masked: BTreeSet<String> = linux.masked_paths().clone().unwrap().into_iter().collect();
    let readonly: BTreeSet<String> = linux
        .readonly_paths()
        .clone()
        .unwrap()
        .into_iter()
        .collect();
    let split = |set| split_mounts(set, &masked, &readonly);
    let (runc_plain, runc_special) = split(mount_set(&results[0][5]));
    let (crun_plain, crun_special) = split(mount_set(&results[1][5]));
    assert_eq!(runc_plain, crun_plain, "mounts differ");
    assert_eq!(runc_special, crun_special, "masked/read-only paths differ");
    for p in &readonly {
        if runc_special.iter().any(|(m, _)| m == p) {
            assert!(
                runc_special.contains(&(p.clone(), true)),
                "{p} not read-only"
            );
        }
    }
    assert!(runc_plain.contains(&("/sys".into(), "sysfs".into(), true, true, true, true)));
    assert!(runc_plain
        .iter()
        .any(|m| m.0 == "/sys/fs/cgroup/memory" && m.2));
    // The cgroups each runtime made under our own cgroup are gone.
    let bundle_cg = spec
        .linux()
        .as_ref()
        .unwrap()
        .cgroups_path()
        .clone()
        .unwrap();
    for h in image_runtime::cgroup::hierarchies().unwrap() {
        assert!(
            !h.own_dir.join(&bundle_cg).exists(),
            "{}",
            h.own_dir.join(&bundle_cg).display()
        );
    }
}

/// Not a test on its own: the child process of
/// `a_killed_caller_leaves_nothing_after_the_next_start`, which starts a
/// container and dies without cleaning up.
#[test]
fn crash_child_helper() {
    let Some(root) = std::env::var_os("IMAGE_RUNTIME_CRASH_ROOT") else {
        return;
    };
    let root = PathBuf::from(root);
    let rt = Runtime::oci(&root.join("state"), RuntimeKind::Runc).unwrap();
    let c = rt
        .container(overlay(
            &root.join("rootfs"),
            &root.join("u"),
            &root.join("w"),
        ))
        .run_config(image_config())
        .cmd(["sleep", "1000"])
        .create()
        .unwrap();
    let id = c.id().to_owned();
    let running = c
        .start(Stdio {
            stdin: Input::Null,
            stdout: Output::Null,
            stderr: Output::Null,
        })
        .unwrap();
    wait_until_running(&rt, &id);
    println!("CONTAINER {id} PID {}", running.pid().unwrap());
    // Die without running any destructor.
    std::process::exit(0);
}

#[test]
fn a_killed_caller_leaves_nothing_after_the_next_start() {
    if !ready(&["runc"]) {
        return;
    }
    let f = fixture();
    let base = f.root.parent().unwrap().to_owned();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("IMAGE_RUNTIME_CRASH_ROOT", &base)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let found = text
        .lines()
        .find_map(|l| l.split_once("CONTAINER ").map(|(_, rest)| rest))
        .and_then(|l| l.split_once(" PID "))
        .and_then(|(id, pid)| Some((id.to_owned(), pid.trim().parse::<u32>().ok()?)));
    // Left behind: a running container, its overlay mount, its cgroups.
    let alive_before = found
        .as_ref()
        .is_some_and(|(_, pid)| Path::new(&format!("/proc/{pid}")).exists());
    let mounted_before = mount_count(&f.root);
    // The next start cleans it up (before any assertion, so a failing
    // test leaves nothing behind either).
    let rt = Runtime::oci(&f.root, RuntimeKind::Runc).unwrap();
    let Some((id, pid)) = found else {
        panic!(
            "helper failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    assert!(alive_before);
    assert_eq!(mounted_before, 1);
    assert!(rt.list().unwrap().is_empty());
    assert_clean(&rt, &id);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while Path::new(&format!("/proc/{pid}")).exists() {
        // Reaped by whoever adopted it (init); a zombie has no cmdline.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "container process {pid} survived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
