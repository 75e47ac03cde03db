//! `RUN` steps in real containers (the native executor) on real snapshots
//! (overlay and copy) of a busybox-static base, as root; and the argv of
//! parsed `RUN` instructions. A missing privilege or busybox-static skips
//! the container tests loudly unless CI=true, where they fail.

use std::collections::BTreeSet;
use std::path::Path;

use image_build::dockerfile::{self, Command};
use image_build::run::{self, Network, OutputStream, RunError, RunSpec, FILES_DIR, MAX_LINE};
use image_core::{Classify, ErrorKind, Interrupt};
use image_overlay::mount::{Mount, MountGuard, SysMounter};
use image_overlay::snapshot::Snapshotter;
use image_overlay::{compare_into, list, ListOptions, PackOptions};
use image_runtime::snapshots::{Driver, Snapshots};
use image_runtime::{NativeOptions, Runtime};
use image_store::{OciDir, Provider};

const APPLETS: &[&str] = &[
    "sh", "echo", "id", "pwd", "cat", "ls", "stat", "sleep", "hostname", "seq", "head", "tr",
    "touch",
];

fn ready() -> bool {
    image_testsupport::tools::ready(&[])
}

/// A runtime, a store and snapshots of one driver, with a committed base
/// snapshot `base`: busybox-static (`bin`, `etc`, `tmp`), root and an
/// `app` user (1000) in `etc/passwd`; no `proc`, `sys`, `dev` or
/// `etc/hosts`, so the runtime has mount points to create.
struct Fixture {
    tmp: tempfile::TempDir,
    runtime: Runtime,
    snapshots: Snapshots,
    store: OciDir,
    _store_dir: tempfile::TempDir,
}

impl Fixture {
    fn new(driver: Driver) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let runtime = Runtime::native(&tmp.path().join("state"), NativeOptions::default()).unwrap();
        let snapshots = Snapshots::open(&tmp.path().join("snapshots"), driver).unwrap();
        let (store_dir, store) = image_testsupport::store::oci_dir();
        let sn = snapshots.snapshotter();
        let mounts = sn.prepare("base-active", None).unwrap();
        let target = tmp.path().join("base-mnt");
        std::fs::create_dir(&target).unwrap();
        let guard = mount_private(&mounts, &target);
        image_testsupport::rootfs::busybox_rootfs(&target, APPLETS);
        std::fs::write(
            target.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(target.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
        drop(guard);
        sn.commit("base", "base-active").unwrap();
        Fixture {
            tmp,
            runtime,
            snapshots,
            store,
            _store_dir: store_dir,
        }
    }

    fn sn(&self) -> &dyn Snapshotter {
        self.snapshots.snapshotter()
    }

    /// A new active snapshot on `base`: its key and mounts.
    fn step(&self, key: &str) -> Vec<Mount> {
        self.sn().prepare(key, Some("base")).unwrap()
    }

    /// Runs `spec` on a new step snapshot `key`: the result and every line.
    fn run(
        &self,
        key: &str,
        spec: &RunSpec,
    ) -> (Result<(), RunError>, Vec<(OutputStream, String)>) {
        let mounts = self.step(key);
        let mut lines = Vec::new();
        let r = run::run(
            &self.runtime,
            mounts,
            spec,
            &mut |s, l| lines.push((s, String::from_utf8_lossy(l).into_owned())),
            None,
        );
        (r, lines)
    }

    /// The paths of the layer the snapshot `key`'s changes make.
    fn layer(&self, key: &str) -> BTreeSet<String> {
        let layer = compare_into(&self.store, self.sn(), key, &PackOptions::default()).unwrap();
        let blob = self.store.reader(&layer.report.digest).unwrap();
        let mut paths = BTreeSet::new();
        list(blob, &ListOptions::default(), |e| {
            paths.insert(
                String::from_utf8_lossy(&e.path)
                    .trim_end_matches('/')
                    .to_owned(),
            );
        })
        .unwrap();
        paths
    }

    /// Nothing of a run is left: no container, nothing mounted under the
    /// fixture or on the snapshots.
    fn assert_clean(&self) {
        assert!(
            self.runtime.list().unwrap().is_empty(),
            "a container is left"
        );
        let under = image_runtime::mountinfo::mounts_under(self.tmp.path()).unwrap();
        assert!(under.is_empty(), "left mounted: {under:?}");
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = self.tmp.path().to_string_lossy().into_owned();
        assert!(
            !info.lines().any(|l| l.contains(&root)),
            "a mount names the fixture: {info}"
        );
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for r in self.runtime.list().unwrap_or_default() {
            let _ = self.runtime.delete(&r.id);
        }
        if let Ok(mounts) = image_runtime::mountinfo::mounts_under(self.tmp.path()) {
            for m in mounts.iter().rev() {
                let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

/// `mounts` on `target`, private (a container another test creates
/// meanwhile gets no peer of it, which could keep it busy); unmounted on
/// drop, detached if busy.
fn mount_private(mounts: &[Mount], target: &Path) -> MountGuard<SysMounter> {
    let guard = MountGuard::mount(SysMounter, mounts, target).unwrap();
    rustix::mount::mount_change(target, rustix::mount::MountPropagationFlags::PRIVATE).unwrap();
    guard
}

/// A set of layer paths.
fn paths(p: &[&str]) -> BTreeSet<String> {
    p.iter().map(|s| (*s).to_owned()).collect()
}

fn sh(script: &str) -> RunSpec {
    RunSpec::new(["/bin/sh", "-c", script])
}

fn stream(lines: &[(OutputStream, String)], which: OutputStream) -> Vec<String> {
    lines
        .iter()
        .filter(|(s, _)| *s == which)
        .map(|(_, l)| l.clone())
        .collect()
}

fn each_driver(test: impl Fn(Driver)) {
    if !ready() {
        return;
    }
    for driver in [Driver::Overlay, Driver::Copy] {
        test(driver);
    }
}

#[test]
fn output_arrives_line_by_line_in_order_per_stream() {
    each_driver(|driver| {
        let f = Fixture::new(driver);
        let script = "for i in $(seq 1 300); do echo out$i; echo err$i >&2; done; \
                      head -c 70000 /dev/zero | tr '\\0' x; echo; printf tail";
        let (r, lines) = f.run("build-out", &sh(script));
        r.unwrap();
        let out = stream(&lines, OutputStream::Stdout);
        let err = stream(&lines, OutputStream::Stderr);
        let want_err: Vec<String> = (1..=300).map(|i| format!("err{i}")).collect();
        assert_eq!(err, want_err);
        let mut want_out: Vec<String> = (1..=300).map(|i| format!("out{i}")).collect();
        // A line longer than MAX_LINE comes in pieces; an unterminated
        // last line comes too.
        want_out.push("x".repeat(MAX_LINE));
        want_out.push("x".repeat(70000 - MAX_LINE));
        want_out.push("tail".into());
        let brief = |v: &[String]| {
            v.iter()
                .map(|l| {
                    if l.len() > 20 {
                        format!("{}x{}", &l[..1], l.len())
                    } else {
                        l.clone()
                    }
                })
                .collect::<Vec<_>>()
        };
        assert!(out == want_out, "stdout differs: {:?}", &brief(&out)[295..]);
        f.assert_clean();
    });
}

#[test]
fn a_failure_has_its_exit_code_and_last_lines() {
    each_driver(|driver| {
        let f = Fixture::new(driver);
        // Each stream alone (between two streams, the arrival order is
        // the pipes' race).
        for (key, redirect) in [("build-fail-out", ""), ("build-fail-err", " >&2")] {
            let script = format!("for i in $(seq 1 20); do echo line$i{redirect}; done; exit 3");
            match f.run(key, &sh(&script)).0 {
                Err(e @ RunError::Failed { .. }) => {
                    assert_eq!(e.kind(), ErrorKind::InvalidInput);
                    let RunError::Failed { code, last_lines } = e else {
                        unreachable!()
                    };
                    assert_eq!(code, 3);
                    let want: Vec<String> = (11..=20).map(|i| format!("line{i}")).collect();
                    assert_eq!(last_lines, want);
                }
                other => panic!("{other:?}"),
            }
        }
        f.assert_clean();
        // A command that cannot start fails at create, typed, and cleans up.
        let (r, _) = f.run("build-missing", &RunSpec::new(["/no/such/program"]));
        assert!(matches!(r, Err(RunError::Container { .. })), "{r:?}");
        f.assert_clean();
    });
}

#[test]
fn env_user_and_workdir_are_the_commands() {
    each_driver(|driver| {
        let f = Fixture::new(driver);
        let mut spec =
            sh("id -u; id -g; pwd; echo $FOO $BUILD_ARG; stat -c %u:%g:%a /work/dir; touch made");
        spec.env = vec!["FOO=foo value".into(), "BUILD_ARG=1".into()];
        spec.user = Some("app".into());
        spec.workdir = "/work/dir".into();
        let (r, lines) = f.run("build-env", &spec);
        r.unwrap();
        let out = stream(&lines, OutputStream::Stdout);
        assert_eq!(
            out,
            ["1000", "1000", "/work/dir", "foo value 1", "1000:1000:755"],
            "{lines:?}"
        );
        // The working directory stays (as Docker's RUN makes it), the
        // mount points do not.
        let want = paths(&["work", "work/dir", "work/dir/made"]);
        assert_eq!(f.layer("build-env"), want);
        f.assert_clean();
    });
}

#[test]
fn a_layer_holds_only_the_commands_changes() {
    each_driver(|driver| {
        let f = Fixture::new(driver);
        let (r, _) = f.run(
            "build-write",
            &sh("echo hi > /hello; echo more > /etc/more"),
        );
        r.unwrap();
        let want = paths(&["hello", "etc", "etc/more"]);
        assert_eq!(f.layer("build-write"), want, "{driver:?}");

        // A command that changes nothing still makes a layer: an empty one.
        let (r, _) = f.run("build-nothing", &sh("cat /etc/passwd > /dev/null"));
        r.unwrap();
        assert_eq!(f.layer("build-nothing"), BTreeSet::new(), "{driver:?}");

        // The mount points are gone from the snapshot itself.
        let target = f.tmp.path().join("check");
        std::fs::create_dir(&target).unwrap();
        let mounts = f.sn().mounts("build-nothing").unwrap();
        let guard = mount_private(&mounts, &target);
        for p in [
            "proc",
            "sys",
            "dev",
            "etc/hosts",
            "etc/hostname",
            "etc/resolv.conf",
        ] {
            assert!(!target.join(p).exists(), "{p} left in the root");
        }
        drop(guard);
        f.assert_clean();
    });
}

/// A stub is only removed while empty: a command that writes into a
/// missing mount point's directory keeps what it wrote.
#[test]
fn a_mount_point_the_command_filled_stays() {
    each_driver(|driver| {
        let f = Fixture::new(driver);
        // /etc exists in the base; /run does not and is no mount point.
        let (r, _) = f.run(
            "build-fill",
            &sh("mkdir -p /run && echo x > /run/x; touch /etc/hosts.allow"),
        );
        r.unwrap();
        let want = paths(&["run", "run/x", "etc", "etc/hosts.allow"]);
        assert_eq!(f.layer("build-fill"), want);
        f.assert_clean();
    });
}

/// The cleaning reaches every path without following a symlink: a
/// command that moves a stub's directory away and puts a symlink in its
/// place keeps the empty file the symlink leads to. (On the copy driver:
/// overlayfs refuses to rename a lower directory, so no command can do
/// this there.)
#[test]
fn a_symlink_in_place_of_a_stubs_directory_is_not_followed() {
    if !ready() {
        return;
    }
    {
        let driver = Driver::Copy;
        let f = Fixture::new(driver);
        let script = "mkdir /victim && touch /victim/hosts /victim/hostname && \
                      mv /etc /etc.moved && ln -s victim /etc";
        let (r, lines) = f.run("build-link", &sh(script));
        r.unwrap_or_else(|e| panic!("{e:?} {lines:?}"));
        let layer = f.layer("build-link");
        for p in ["victim/hosts", "victim/hostname", "etc"] {
            assert!(layer.contains(p), "{driver:?}: {p} missing from {layer:?}");
        }
        f.assert_clean();
    }
}

#[test]
fn network_none_has_only_loopback_and_host_the_hosts() {
    each_driver(|driver| {
        let f = Fixture::new(driver);
        let (r, lines) = f.run("build-net", &sh("ls /sys/class/net"));
        r.unwrap();
        assert_eq!(stream(&lines, OutputStream::Stdout), ["lo"]);

        let mut spec = sh("ls /sys/class/net");
        spec.network = Network::Host;
        let (r, lines) = f.run("build-host", &spec);
        r.unwrap();
        let mut host: Vec<String> = std::fs::read_dir("/sys/class/net")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        host.sort();
        let mut seen = stream(&lines, OutputStream::Stdout);
        seen.sort();
        assert_eq!(seen, host);
        assert_eq!(f.layer("build-host"), BTreeSet::new());
        f.assert_clean();
    });
}

#[test]
fn an_interrupt_stops_the_command_and_leaves_nothing() {
    each_driver(|driver| {
        let f = Fixture::new(driver);
        let mounts = f.step("build-sleep");
        let interrupt = Interrupt::new();
        let mut hostname = String::new();
        let r = run::run(
            &f.runtime,
            mounts,
            &sh("hostname; exec sleep 1000"),
            &mut |_, line| {
                hostname = String::from_utf8_lossy(line).into_owned();
                interrupt.set();
            },
            Some(&interrupt),
        );
        assert!(matches!(r, Err(RunError::Cancelled)), "{r:?}");
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Cancelled);
        f.assert_clean();
        // The container's cgroups are gone: the hostname is its ID's start.
        assert_eq!(hostname.len(), 12, "{hostname}");
        let prefix = format!("{}{hostname}", image_runtime::cgroup::CGROUP_PREFIX);
        for h in image_runtime::cgroup::hierarchies().unwrap() {
            if let Ok(rd) = std::fs::read_dir(&h.own_dir) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    assert!(
                        !name.starts_with(&prefix),
                        "cgroup left: {}",
                        e.path().display()
                    );
                }
            }
        }
        // The runtime's state (container directories, native records) is empty.
        for sub in ["containers", "native"] {
            let dir = f.runtime.root().join(sub);
            let left: Vec<_> = match dir.read_dir() {
                Ok(rd) => rd.map(|e| e.unwrap().file_name()).collect(),
                Err(_) => Vec::new(),
            };
            assert!(left.is_empty(), "state left in {sub}: {left:?}");
        }
        assert_eq!(f.layer("build-sleep"), BTreeSet::new());
        // An interrupt set before the run starts nothing.
        let r = run::run(
            &f.runtime,
            f.step("build-early"),
            &sh("true"),
            &mut |_, _| {},
            Some(&interrupt),
        );
        assert!(matches!(r, Err(RunError::Cancelled)), "{r:?}");
        f.assert_clean();
    });
}

/// The RUN instruction of a one-stage Dockerfile.
fn parsed(body: &str) -> dockerfile::Run {
    let df = dockerfile::parse("Dockerfile", &format!("FROM scratch\n{body}")).unwrap();
    match &df.stages[0].instructions[0].command {
        Command::Run(r) => r.clone(),
        other => panic!("{other:?}"),
    }
}

fn spec_of(body: &str) -> RunSpec {
    RunSpec::from_instruction(&parsed(body), &[], vec![], None, "/".into()).unwrap()
}

#[test]
fn argv_of_shell_exec_and_heredoc_forms() {
    let shell = |s: &str| vec!["/bin/sh".to_owned(), "-c".to_owned(), s.to_owned()];
    assert_eq!(
        spec_of("RUN echo $HOME && ls").args,
        shell("echo $HOME && ls")
    );
    assert_eq!(spec_of("RUN [\"/bin/ls\", \"-l\"]").args, ["/bin/ls", "-l"]);
    // SHELL replaces /bin/sh -c.
    let custom = ["/bin/bash".to_owned(), "-ec".to_owned()];
    let s =
        RunSpec::from_instruction(&parsed("RUN a b"), &custom, vec![], None, "/".into()).unwrap();
    assert_eq!(s.args, ["/bin/bash", "-ec", "a b"]);
    // One heredoc: its body is the script; <<- strips tabs; a quoted
    // delimiter changes nothing here (the shell reads the body).
    assert_eq!(
        spec_of("RUN <<EOF\necho $A\nEOF\n").args,
        shell("echo $A\n")
    );
    assert_eq!(
        spec_of("RUN <<-EOF\n\techo a\n\tEOF\n").args,
        shell("echo a\n")
    );
    assert_eq!(
        spec_of("RUN <<'EOF'\necho $A\nEOF\n").args,
        shell("echo $A\n")
    );
    // With a shebang: a file run by path.
    let s = spec_of("RUN <<-EOF\n\t#!/bin/sh\n\techo hi\n\tEOF\n");
    assert_eq!(s.args, shell(&format!("{FILES_DIR}/EOF")));
    assert_eq!(
        s.files,
        [("EOF".to_owned(), b"#!/bin/sh\necho hi\n".to_vec())]
    );
    // Heredocs in a longer line: the shell reads them as written.
    assert_eq!(
        spec_of("RUN cat <<A && cat <<-'B'\none\nA\n\ttwo $X\n\tB\n").args,
        // (BuildKit's way: each body as written, then the bare delimiter.)
        shell("cat <<A && cat <<-'B'\none\nA\n\ttwo $X\nB")
    );
    // --network.
    assert_eq!(spec_of("RUN --network=host true").network, Network::Host);
    assert_eq!(spec_of("RUN --network=default true").network, Network::None);
    assert_eq!(spec_of("RUN true").network, Network::None);
    let bad = RunSpec::from_instruction(
        &parsed("RUN --network=bridge true"),
        &[],
        vec![],
        None,
        "/".into(),
    );
    assert!(matches!(bad, Err(RunError::Network { .. })), "{bad:?}");
    assert_eq!(bad.unwrap_err().kind(), ErrorKind::InvalidInput);
    // Part 2 takes mounts (typed in image_build::mounts); the one this
    // builder cannot do is refused by name, classed Unsupported.
    let mount = RunSpec::from_instruction(
        &parsed("RUN --mount=type=cache,target=c true"),
        &[],
        vec![],
        None,
        "/w".into(),
    )
    .unwrap();
    assert_eq!(mount.mounts[0].target(), Some("/w/c"));
    let ssh = RunSpec::from_instruction(
        &parsed("RUN --mount=type=ssh,id=$ID true"),
        &[],
        vec![],
        None,
        "/".into(),
    );
    assert!(matches!(ssh, Err(RunError::MountFlag { .. })), "{ssh:?}");
    assert_eq!(ssh.unwrap_err().kind(), ErrorKind::Unsupported);
}

/// Every generated heredoc line gives an argv that, through the shell,
/// is BuildKit's: a single heredoc's body (chomped), or the line rebuilt.
#[test]
fn generated_heredoc_lines_rebuild_as_written() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let words = ["echo", "a", "$X", "'q'", "\"d\"", "&&", ">f"];
    let bodies = ["x", "\ty", "$Z", "#!/bin/sh", "  z", ""];
    for _ in 0..500 {
        let n_docs = 1 + next(3) as usize;
        let prefix: Vec<&str> = (0..next(3))
            .map(|_| words[next(words.len() as u64) as usize])
            .collect();
        let mut line = prefix.join(" ");
        let mut docs = Vec::new();
        for d in 0..n_docs {
            let chomp = next(2) == 0;
            let quoted = next(2) == 0;
            let name = format!("E{d}");
            let word = match (chomp, quoted) {
                (true, true) => format!("<<-'{name}'"),
                (true, false) => format!("<<-{name}"),
                (false, true) => format!("<<'{name}'"),
                (false, false) => format!("<<{name}"),
            };
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
            let body: String = (0..next(3))
                .map(|_| format!("{}\n", bodies[next(bodies.len() as u64) as usize]))
                .collect();
            let indent = if chomp { "\t" } else { "" };
            docs.push((name, body, chomp, indent));
        }
        let mut text = format!("RUN {line}\n");
        for (name, body, _, indent) in &docs {
            text.push_str(body);
            text.push_str(indent);
            text.push_str(name);
            text.push('\n');
        }
        let spec = spec_of(&text);
        assert_eq!(spec.args[..2], ["/bin/sh", "-c"], "{text}");
        let script = &spec.args[2];
        if prefix.is_empty() && n_docs == 1 {
            let (name, body, chomp, _) = &docs[0];
            let body = if *chomp {
                body.split_inclusive('\n')
                    .map(|l| l.trim_start_matches('\t'))
                    .collect()
            } else {
                body.clone()
            };
            if body.starts_with("#!") {
                assert_eq!(script, &format!("{FILES_DIR}/{name}"), "{text}");
                assert_eq!(spec.files, [(name.clone(), body.into_bytes())]);
            } else {
                assert_eq!(script, &body, "{text}");
                assert!(spec.files.is_empty());
            }
        } else {
            let mut want = line.clone();
            for (name, body, _, _) in &docs {
                want.push('\n');
                want.push_str(body);
                want.push_str(name);
            }
            assert_eq!(script, &want, "{text}");
            assert!(spec.files.is_empty());
        }
    }
}

#[test]
fn heredoc_scripts_run() {
    each_driver(|driver| {
        let f = Fixture::new(driver);
        let cases: [(&str, &[&str]); 4] = [
            ("RUN <<EOF\necho one\necho two > /made\nEOF\n", &["one"]),
            (
                "RUN <<EOF\n#!/bin/sh\necho script $0\nEOF\n",
                &["script /dev/pipes/EOF"],
            ),
            (
                "RUN cat <<A && cat <<-'B'\nfirst\nA\n\tsecond $HOME\n\tB\n",
                &["first", "second $HOME"],
            ),
            ("RUN <<-EOF\n\techo tabs\n\tEOF\n", &["tabs"]),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let key = format!("build-doc-{i}");
            let (r, lines) = f.run(&key, &spec_of(text));
            r.unwrap_or_else(|e| panic!("{text}: {e:?} {lines:?}"));
            assert_eq!(stream(&lines, OutputStream::Stdout), *want, "{text}");
            let layer = f.layer(&key);
            if i == 0 {
                assert_eq!(layer, paths(&["made"]));
            } else {
                assert_eq!(
                    layer,
                    BTreeSet::new(),
                    "{text}: the script is no part of the layer"
                );
            }
        }
        f.assert_clean();
    });
}

/// runc and crun run a RUN step as the native executor does: output,
/// user and working directory, a layer with only the command's changes.
#[test]
fn runc_and_crun_run_steps_too() {
    if !ready() {
        return;
    }
    for tool in image_testsupport::tools::installed(&["runc", "crun"]) {
        let kind = match tool {
            "runc" => image_runtime::RuntimeKind::Runc,
            _ => image_runtime::RuntimeKind::Crun,
        };
        let mut f = Fixture::new(Driver::Overlay);
        f.runtime = Runtime::oci(&f.tmp.path().join(format!("state-{tool}")), kind).unwrap();
        let mut spec = sh("id -u; pwd; echo err >&2; echo hi > hello");
        spec.user = Some("app".into());
        spec.workdir = "/home/app".into();
        let (r, lines) = f.run("build-oci", &spec);
        r.unwrap_or_else(|e| panic!("{tool}: {e:?} {lines:?}"));
        assert_eq!(
            stream(&lines, OutputStream::Stdout),
            ["1000", "/home/app"],
            "{tool}"
        );
        assert_eq!(stream(&lines, OutputStream::Stderr), ["err"], "{tool}");
        let want = paths(&["home", "home/app", "home/app/hello"]);
        assert_eq!(f.layer("build-oci"), want, "{tool}");
        f.assert_clean();
    }
}
