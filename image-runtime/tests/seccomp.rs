//! Seccomp against the real kernel, as root: a static probe
//! (`tests/seccomp/probe.c`, built with `gcc -static`) makes a set of
//! system calls in the container and prints, per call, `ok`, `E<errno>` or
//! `S<signal>`. Under Docker's default profile the native backend, runc
//! and crun (which compile the same `linux.seccomp` with libseccomp) give
//! the same table; `unconfined` and a profile of the caller's change it as
//! Docker's would. A missing tool skips loudly unless CI=true.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use image_runtime::backend::{self, Backend};
use image_runtime::spec::seccomp::Profile;
use image_runtime::{Exit, NativeRuntime, OciRuntime, RunOptions, RuntimeKind, SeccompMode, Stdio};

use common::{ready, TIMEOUT};

const APPLETS: &[&str] = &["sh", "uname", "echo", "true", "ls", "cat"];

/// A bundle with a busybox root filesystem and the probe at `/bin/probe`.
struct Bundle {
    tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Bundle {
    fn new(opts: &RunOptions, args: &[&str]) -> Bundle {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bundle");
        let rootfs = dir.join("rootfs");
        common::busybox_rootfs(&rootfs, APPLETS);
        build_probe(&rootfs.join("bin/probe"));
        let mut opts = opts.clone();
        opts.user = Some("0".into());
        opts.cmd = Some(args.iter().map(|a| (*a).to_owned()).collect());
        image_runtime::bundle::export(&dir, &common::image_config(), &opts).unwrap();
        Bundle { tmp, dir }
    }

    fn backends(&self, which: &[&str]) -> Vec<(String, Box<dyn Backend>)> {
        which
            .iter()
            .map(|name| {
                let state = self.tmp.path().join(name);
                let be: Box<dyn Backend> = match *name {
                    "native" => Box::new(NativeRuntime::new(&state).unwrap()),
                    "runc" => Box::new(OciRuntime::new(RuntimeKind::Runc, &state).unwrap()),
                    "crun" => Box::new(OciRuntime::new(RuntimeKind::Crun, &state).unwrap()),
                    other => panic!("no backend {other}"),
                };
                ((*name).to_owned(), be)
            })
            .collect()
    }
}

/// Compiles the probe statically to `out`.
fn build_probe(out: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/seccomp/probe.c");
    let st = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(out)
        .arg(&src)
        .status()
        .expect("running gcc");
    assert!(st.success(), "gcc -static {} failed", src.display());
}

fn run(be: &dyn Backend, id: &str, b: &Bundle) -> Exit {
    be.create(id, &b.dir).unwrap();
    let mut p = be.start(id, &b.dir, Stdio::capture()).unwrap();
    let exit = backend::wait_timeout(&mut *p, TIMEOUT)
        .unwrap()
        .expect("finished in time");
    drop(p);
    be.delete(id, true).unwrap();
    common::assert_no_cgroups(id);
    exit
}

/// The probe's table, `name -> ok | E<errno> | S<signal>`.
fn probe(be: &dyn Backend, id: &str, b: &Bundle) -> BTreeMap<String, String> {
    let exit = run(be, id, b);
    assert!(exit.status.success(), "{id}: {}", exit.stderr_str());
    parse_table(&exit.stdout_str())
}

/// The lines `NAME=RESULT` of the probe's output.
fn parse_table(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("NAME=RESULT");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Asserts the rows `want` of the table `got` of backend `name`.
fn assert_rows(name: &str, got: &BTreeMap<String, String>, want: &[(&str, &str)]) {
    for (k, v) in want {
        assert_eq!(got[*k], *v, "{name}: {k} in {got:?}");
    }
}

fn table(rows: &[(&str, &str)]) -> BTreeMap<String, String> {
    rows.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What Docker's default profile gives root with Docker's 14 capabilities
/// on a kernel of 4.8 or later (where `ptrace` is allowed).
fn default_table() -> BTreeMap<String, String> {
    table(&[
        ("getpid", "ok"),
        ("openat", "ok"),
        ("uname", "ok"),
        ("personality_linux", "ok"),
        ("personality_query", "ok"),
        ("personality_odd", "E1"),
        ("keyctl", "E1"),
        ("add_key", "E1"),
        ("unshare_user", "E1"),
        ("unshare_mnt", "E1"),
        ("setns", "E1"),
        ("mount", "E1"),
        ("reboot", "E1"),
        ("swapon", "E1"),
        ("clock_settime", "E1"),
        ("ptrace", "ok"),
        ("socket_vsock", "E1"),
        ("socket_inet", "ok"),
        ("clone", "ok"),
        ("clone_newuser", "E1"),
        ("clone_newns", "E1"),
        // ENOSYS, so that libc falls back to clone, whose flags are seen.
        ("clone3", "E38"),
    ])
}

#[test]
fn the_default_profile_gives_the_same_table_under_native_runc_and_crun() {
    if !ready(&["runc", "crun", "gcc"]) {
        return;
    }
    let b = Bundle::new(&RunOptions::new(), &["/bin/probe"]);
    let want = default_table();
    for (name, be) in b.backends(&["native", "runc", "crun"]) {
        let got = probe(&*be, &format!("default-{name}"), &b);
        assert_eq!(got, want, "{name}");
    }
    // With no_new_privs the filter is installed last, just before execve
    // (without it, before the credentials change, while the process may
    // still install one): the same table.
    let config = b.dir.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    spec["process"]["noNewPrivileges"] = serde_json::json!(true);
    std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
    for (name, be) in b.backends(&["native", "runc"]) {
        let got = probe(&*be, &format!("nnp-{name}"), &b);
        assert_eq!(got, want, "{name} with no_new_privs");
    }
    // Ordinary busybox work passes under it.
    let b = Bundle::new(
        &RunOptions::new(),
        &[
            "sh",
            "-c",
            "echo hi > /tmp/f && cat /tmp/f && ls / >/dev/null && uname -s",
        ],
    );
    for (name, be) in b.backends(&["native", "runc", "crun"]) {
        let exit = run(&*be, &format!("busybox-{name}"), &b);
        assert!(exit.status.success(), "{name}: {}", exit.stderr_str());
        assert_eq!(exit.stdout_str(), "hi\nLinux\n", "{name}");
    }
}

#[test]
fn unconfined_lets_through_what_the_default_denies() {
    if !ready(&["runc", "gcc"]) {
        return;
    }
    let mut opts = RunOptions::new();
    opts.seccomp = SeccompMode::Unconfined;
    let b = Bundle::new(&opts, &["/bin/probe"]);
    let mut tables = Vec::new();
    for (name, be) in b.backends(&["native", "runc"]) {
        let got = probe(&*be, &format!("unconfined-{name}"), &b);
        // No filter: the kernel's own answer (bad fd, bad clock, no
        // capability for mount), and keys and personas as root may.
        assert_rows(
            &name,
            &got,
            &[
                ("setns", "E9"),
                ("clock_settime", "E22"),
                ("personality_odd", "ok"),
                ("clone3", "ok"),
                ("keyctl", "ok"),
                ("add_key", "ok"),
            ],
        );
        tables.push(got);
    }
    assert_eq!(tables[0], tables[1], "native against runc");
}

#[test]
fn a_callers_profile_with_kill_errno_and_argument_rules_applies_alike() {
    if !ready(&["runc", "crun", "gcc"]) {
        return;
    }
    let profile = Profile::from_slice(
        br#"{
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["keyctl"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["add_key"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["uname"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
             "args": [{"index": 0, "value": 6, "op": "SCMP_CMP_EQ"}]},
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
             "args": [{"index": 0, "value": 2, "valueTwo": 18, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["setns"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
             "args": [{"index": 1, "value": 255, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    }"#,
    )
    .unwrap();
    let mut opts = RunOptions::new();
    opts.seccomp = SeccompMode::Profile(Box::new(profile));
    let b = Bundle::new(&opts, &["/bin/probe"]);
    let mut tables = Vec::new();
    for (name, be) in b.backends(&["native", "runc", "crun"]) {
        let got = probe(&*be, &format!("custom-{name}"), &b);
        assert_rows(
            &name,
            &got,
            &[
                ("keyctl", "S31"),
                ("add_key", "E38"),
                ("uname", "E1"),
                ("personality_odd", "E22"),
                ("personality_linux", "ok"),
                ("setns", "E13"),
                // MASKED_EQ compares with valueTwo masked too (libseccomp's
                // way): AF_INET & 2 == 18 & 2.
                ("socket_inet", "E13"),
                ("getpid", "ok"),
                ("clone3", "ok"),
            ],
        );
        tables.push((name, got));
    }
    for (name, t) in &tables[1..] {
        assert_eq!(&tables[0].1, t, "native against {name}");
    }
    // busybox's uname cannot tell the system's name under it (it prints
    // what its failed uname(2) left: nothing), where it says Linux without.
    let b = Bundle::new(&opts, &["uname", "-s"]);
    for (name, be) in b.backends(&["native", "runc", "crun"]) {
        let exit = run(&*be, &format!("uname-{name}"), &b);
        assert_eq!(
            (exit.stdout_str().as_str(), exit.status.code()),
            ("\n", 0),
            "{name}: {}",
            exit.stderr_str()
        );
    }
}

/// A process joining a running container (`exec`) is confined by the
/// container's filter, as runc confines it.
#[test]
fn exec_into_a_native_container_gets_its_filter() {
    if !ready(&["gcc"]) {
        return;
    }
    let b = Bundle::new(&RunOptions::new(), &["sh", "-c", "exec sleep 100"]);
    let native = NativeRuntime::new(&b.tmp.path().join("native")).unwrap();
    native.create("exec", &b.dir).unwrap();
    let mut p = native.start("exec", &b.dir, Stdio::capture()).unwrap();
    let spec = image_core::oci_spec::runtime::Spec::load(b.dir.join("config.json")).unwrap();
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(vec!["/bin/probe".into()]));
    let mut e = native
        .exec("exec", &b.dir, &process, Stdio::capture())
        .unwrap();
    let exit = backend::wait_timeout(&mut *e, TIMEOUT).unwrap().unwrap();
    drop(e);
    p.kill_now();
    drop(p);
    native.delete("exec", true).unwrap();
    common::assert_no_cgroups("exec");
    assert!(exit.status.success(), "{}", exit.stderr_str());
    assert_eq!(parse_table(&exit.stdout_str()), default_table());
}
