//! The build engine end to end, as root, on a real store, real snapshots
//! and mounts: base images are made in the test from Debian's
//! busybox-static (no network). A missing tool or privilege skips a test
//! loudly unless CI=true, where it fails.

use std::collections::BTreeMap;
use std::path::PathBuf;

use image_build::build::{BuildError, BuildEvent, BuildOptions, BuildResult, Builder, StepError};
use image_core::config::ConfigFile;
use image_core::{Classify, ErrorKind, Platform};
use image_overlay::ConfigChanges;
use image_runtime::snapshots::Snapshots;
use image_runtime::{NativeOptions, Runtime};
use image_store::OciDir;

const BASE: &str = "test.local/busybox:1";
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "mkdir", "rm", "touch", "test", "true", "false", "env", "id",
];

struct Fixture {
    tmp: tempfile::TempDir,
    store: OciDir,
    runtime: Runtime,
}

impl Fixture {
    fn context(&self) -> PathBuf {
        self.tmp.path().join("context")
    }

    fn builder(&self) -> Builder<'_, OciDir> {
        Builder::new(&self.store, &self.runtime)
    }

    /// Builds `dockerfile` with the context directory, recording events.
    fn build(
        &self,
        dockerfile: &str,
        change: impl FnOnce(&mut BuildOptions),
    ) -> (Result<BuildResult, BuildError>, Vec<BuildEvent>) {
        let mut options = BuildOptions::new(self.context());
        options.dockerfile_text = Some(dockerfile.to_owned());
        change(&mut options);
        let mut events = Vec::new();
        let r = self
            .builder()
            .build(&options, &mut |e: &BuildEvent| events.push(e.clone()));
        (r, events)
    }
}

/// Nothing outlives a test: snapshots and mounts.
impl Drop for Fixture {
    fn drop(&mut self) {
        if let Ok(mounts) = image_runtime::mountinfo::mounts_under(self.tmp.path()) {
            for m in mounts.iter().rev() {
                let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
            }
        }
        if let Some(s) = self.runtime.snapshots() {
            let sn = s.snapshotter();
            for _ in 0..64 {
                let all = sn.list().unwrap_or_default();
                if all.is_empty() {
                    break;
                }
                for i in all {
                    let _ = sn.remove(&i.name);
                }
            }
        }
    }
}

/// A store holding BASE (busybox-static, PATH set, CMD sh), a runtime with
/// snapshots beside it, and an empty context directory; `None` (after a
/// loud skip) when the test cannot run here.
fn fixture() -> Option<Fixture> {
    if !image_testsupport::tools::ready(&[]) {
        return None;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(tmp.path().join("store")).expect("store");
    let rootfs = tmp.path().join("rootfs");
    image_testsupport::rootfs::container_rootfs(&rootfs, APPLETS);
    image_overlay::append_dir(
        &store,
        None,
        &rootfs,
        &Platform::host(),
        &ConfigChanges::new()
            .cmd(["sh"])
            .env("PATH=/usr/local/bin:/usr/bin:/bin"),
        BASE,
    )
    .expect("base image");
    std::fs::remove_dir_all(&rootfs).expect("rm rootfs");
    std::fs::create_dir(tmp.path().join("context")).expect("context");
    let snapshots = Snapshots::open_default(&tmp.path().join("snapshots")).expect("snapshots");
    let runtime = Runtime::native(&tmp.path().join("state"), NativeOptions::default())
        .expect("runtime")
        .with_snapshots(snapshots)
        .expect("with snapshots");
    Some(Fixture {
        tmp,
        store,
        runtime,
    })
}

fn config(r: &BuildResult) -> &ConfigFile {
    r.config.file()
}

fn empty_pattern(r: &BuildResult) -> Vec<bool> {
    r.config.history().iter().map(|h| h.empty_layer).collect()
}

#[test]
fn config_only_instructions_change_the_config_as_docker_does() {
    let Some(f) = fixture() else { return };
    let text = format!(
        r#"FROM {BASE}
ARG GREETING=hello
ENV A=1 B=$GREETING
ENV A=2
LABEL org.example.one="first" two=2
EXPOSE 80 53/udp 8000-8001
USER app:app
WORKDIR /srv
WORKDIR sub
VOLUME ["/data", "/cache"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --timeout=1m30s --retries=3 CMD test -e /srv
CMD echo $A
SHELL ["/bin/sh", "-e", "-c"]
ENTRYPOINT env
MAINTAINER someone@example.com
ONBUILD RUN echo child
"#
    );
    let (r, events) = f.build(&text, |o| o.tags = vec!["test.local/out:1".into()]);
    let r = r.expect("build");
    let c = config(&r);
    let rc = c.config.as_ref().expect("run config");
    assert_eq!(
        rc.env.as_deref().unwrap(),
        ["PATH=/usr/local/bin:/usr/bin:/bin", "A=2", "B=hello"]
    );
    let labels = rc.labels.as_ref().unwrap();
    assert_eq!(labels["org.example.one"], "first");
    assert_eq!(labels["two"], "2");
    let ports: Vec<&str> = rc
        .exposed_ports
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(ports, ["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
    assert_eq!(rc.user.as_deref(), Some("app:app"));
    assert_eq!(rc.working_dir.as_deref(), Some("/srv/sub"));
    let vols: Vec<&str> = rc
        .volumes
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(vols, ["/cache", "/data"]);
    assert_eq!(rc.stop_signal.as_deref(), Some("SIGINT"));
    let hc = rc.healthcheck.as_ref().unwrap();
    assert_eq!(hc.test.as_deref().unwrap(), ["CMD-SHELL", "test -e /srv"]);
    assert_eq!(hc.interval, Some(30_000_000_000));
    assert_eq!(hc.timeout, Some(90_000_000_000));
    assert_eq!(hc.retries, Some(3));
    // CMD was set in this stage before ENTRYPOINT: it stays. Each shell
    // form is wrapped in the SHELL of its time.
    assert_eq!(rc.cmd.as_deref().unwrap(), ["/bin/sh", "-c", "echo $A"]);
    assert_eq!(
        rc.entrypoint.as_deref().unwrap(),
        ["/bin/sh", "-e", "-c", "env"]
    );
    assert_eq!(rc.shell.as_deref().unwrap(), ["/bin/sh", "-e", "-c"]);
    assert_eq!(rc.on_build.as_deref().unwrap(), ["RUN echo child"]);
    assert_eq!(c.author.as_deref(), Some("someone@example.com"));

    // The base's one layer, then one empty entry per instruction.
    assert_eq!(r.manifest.layers().len(), 1);
    let pattern = empty_pattern(&r);
    assert_eq!(pattern.len(), 17);
    assert!(!pattern[0] && pattern[1..].iter().all(|e| *e));
    let by: Vec<&str> = r
        .config
        .history()
        .iter()
        .filter_map(|h| h.created_by.as_deref())
        .collect();
    assert!(by.contains(&"/bin/sh -c #(nop)  ENV A=2"), "{by:?}");
    assert_eq!((r.steps, r.cached), (0, 0));
    assert_eq!(r.tags, ["test.local/out:1"]);
    let tagged = image_store::resolve_image(&f.store, "test.local/out:1", None).expect("tag");
    assert_eq!(tagged.id(), &r.image_id);
    assert!(matches!(
        events.first(),
        Some(BuildEvent::StepStarted {
            index: 1,
            total: 1,
            ..
        })
    ));
}

#[test]
fn entrypoint_resets_a_base_cmd_unless_cmd_follows() {
    let Some(f) = fixture() else { return };
    let (r, _) = f.build(&format!("FROM {BASE}\nENTRYPOINT [\"/bin/sh\"]\n"), |_| {});
    let rc = config(&r.expect("build")).config.clone().unwrap();
    assert_eq!(rc.cmd, None);
    let (r, _) = f.build(
        &format!("FROM {BASE}\nENTRYPOINT [\"/bin/sh\"]\nCMD [\"-c\", \"true\"]\n"),
        |_| {},
    );
    let rc = config(&r.expect("build")).config.clone().unwrap();
    assert_eq!(rc.cmd.as_deref().unwrap(), ["-c", "true"]);
}

#[test]
fn a_missing_base_image_is_named_with_its_line() {
    let Some(f) = fixture() else { return };
    let (r, _) = f.build("# a comment\nFROM test.local/nothing:here\n", |_| {});
    let e = r.expect_err("no such image");
    match &e {
        BuildError::Step {
            line,
            instruction,
            source: StepError::BaseImage { name, .. },
            ..
        } => {
            assert_eq!((*line, instruction.as_str()), (2, "FROM"));
            assert_eq!(name, "test.local/nothing:here");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().starts_with("Dockerfile:2: FROM"), "{e}");
}

#[test]
fn the_target_builds_only_the_stages_it_needs() {
    let Some(f) = fixture() else { return };
    let text = format!(
        "FROM {BASE} AS base\nENV STAGE=base\n\
         FROM test.local/not-there:1 AS unused\n\
         FROM base AS app\nENV APP=1\n\
         FROM scratch AS last\n"
    );
    let (r, events) = f.build(&text, |o| o.target = Some("app".into()));
    let r = r.expect("build");
    let env = config(&r).config.as_ref().unwrap().env.clone().unwrap();
    assert!(env.contains(&"STAGE=base".to_owned()) && env.contains(&"APP=1".to_owned()));
    let skipped: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::StageSkipped { stage } => Some(stage.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(skipped, ["unused", "last"]);
    let (r, _) = f.build(&text, |o| o.target = Some("nope".into()));
    assert!(matches!(r, Err(BuildError::NoTarget(t)) if t == "nope"));
}

#[test]
fn an_unused_build_arg_is_a_warning() {
    let Some(f) = fixture() else { return };
    let (r, events) = f.build(&format!("ARG USED\nFROM {BASE}\nARG ALSO\n"), |o| {
        o.build_args = BTreeMap::from([
            ("USED".into(), "1".into()),
            ("ALSO".into(), "2".into()),
            ("NOBODY".into(), "3".into()),
            ("HTTP_PROXY".into(), "x".into()),
        ])
    });
    r.expect("build");
    let warnings: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Warning { message } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("[NOBODY]"), "{warnings:?}");
}
