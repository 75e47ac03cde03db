//! The build engine end to end, as root, on a real store, real snapshots
//! and mounts: base images are made in the test from Debian's
//! busybox-static (no network). A missing tool or privilege skips a test
//! loudly unless CI=true, where it fails.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use image_build::build::{BuildError, BuildEvent, BuildOptions, BuildResult, Builder, StepError};
use image_core::config::ConfigFile;
use image_core::{Classify, ErrorKind, Platform};
use image_overlay::ConfigChanges;
use image_runtime::Runtime;
use image_store::{Manager, OciDir, Provider};

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

    fn blobs(&self) -> usize {
        self.store.list().expect("list").len()
    }
}

/// Nothing outlives a test: snapshots and mounts.
impl Drop for Fixture {
    fn drop(&mut self) {
        common::clean_up(self.tmp.path(), &self.runtime);
    }
}

/// A store holding BASE (busybox-static, PATH set, CMD sh), a runtime with
/// snapshots beside it, and an empty context directory; `None` (after a
/// loud skip) when the test cannot run here.
fn fixture() -> Option<Fixture> {
    if !image_testsupport::tools::ready(&[]) {
        return None;
    }
    // Every time in an image is this one, so that a rebuild from the cache
    // gives the same image (without it, only the config and manifest are
    // new). Set once, before any build of any test reads it: every test
    // starts here and waits for the one writer.
    static EPOCH: std::sync::Once = std::sync::Once::new();
    EPOCH.call_once(|| std::env::set_var("SOURCE_DATE_EPOCH", "1700000000"));
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
    let runtime = common::runtime(tmp.path());
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

/// `FROM --platform`: a stage for another platform may COPY and change its
/// config (the result is for that platform), but not RUN (no emulation);
/// a platform that does not parse is refused at its FROM.
#[test]
fn from_platform_makes_a_foreign_image_without_run_and_refuses_run() {
    let Some(f) = fixture() else { return };
    let foreign = if image_core::Platform::host().architecture == "s390x" {
        "linux/ppc64le"
    } else {
        "linux/s390x"
    };
    std::fs::write(f.context().join("p.txt"), "for another machine\n").unwrap();
    let (r, _) = f.build(
        &format!("FROM --platform={foreign} scratch\nCOPY p.txt /p.txt\nENV A=1\n"),
        |_| {},
    );
    let r = r.expect("a foreign stage without RUN builds");
    let c = config(&r);
    assert_eq!(format!("{}/{}", c.os, c.architecture), foreign);
    assert_eq!(layer_steps(&r), 1);

    let (r, _) = f.build(
        &format!("FROM --platform={foreign} {BASE}\nRUN true\n"),
        |_| {},
    );
    let e = r.expect_err("RUN on a foreign platform");
    assert!(
        matches!(
            &e,
            BuildError::Step {
                line: 1,
                source: StepError::Invalid {
                    what: "FROM --platform",
                    ..
                },
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    let (r, _) = f.build("FROM --platform=not/a/plat/form scratch\n", |_| {});
    assert!(r.is_err(), "a bad platform is refused");
    // The host's own platform, spelled out, is the host's.
    let host = image_core::Platform::host();
    let (r, _) = f.build(
        &format!(
            "FROM --platform={}/{} {BASE}\nRUN true\n",
            host.os, host.architecture
        ),
        |_| {},
    );
    r.expect("the host's platform runs");
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

fn layer_steps(r: &BuildResult) -> usize {
    r.config.history().iter().filter(|h| !h.empty_layer).count()
}

/// The content of `path` in the image `name`, read by running `cat` in a
/// build from it (the build engine is what is tested: a RUN whose output
/// is captured).
fn cat(f: &Fixture, name: &str, path: &str) -> String {
    let (r, events) = f.build(&format!("FROM {name}\nRUN cat {path}\n"), |o| {
        o.no_cache = true;
    });
    r.expect("cat build");
    events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Output { line, .. } => Some(format!("{line}\n")),
            _ => None,
        })
        .collect()
}

fn cached_steps(events: &[BuildEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, BuildEvent::StepCached { .. }))
        .count()
}

const MULTI: &str = r#"FROM test.local/busybox:1 AS build
WORKDIR /src
RUN echo setup > /setup
COPY greeting.txt .
RUN echo "built from $(cat greeting.txt)" > out.txt
FROM test.local/not-there:1 AS unused
RUN false
FROM test.local/busybox:1
ARG FLAVOUR=plain
COPY --from=build /src/out.txt /app/out.txt
RUN echo "$FLAVOUR" > /app/flavour && rm /bin/true
ENV DONE=1
CMD ["cat", "/app/out.txt"]
"#;

#[test]
fn a_multi_stage_build_runs_copies_and_caches() {
    let Some(f) = fixture() else { return };
    std::fs::write(f.context().join("greeting.txt"), "hello\n").unwrap();
    let (r, events) = f.build(MULTI, |o| o.tags = vec!["test.local/multi:1".into()]);
    let r = r.expect("build");
    // Only the final stage's layers and history: the base's layer, COPY
    // --from and RUN.
    assert_eq!(r.manifest.layers().len(), 3);
    assert_eq!(layer_steps(&r), 3);
    assert_eq!(empty_pattern(&r), [false, true, false, false, true, true]);
    assert_eq!((r.steps, r.cached), (5, 0));
    assert!(events
        .iter()
        .any(|e| matches!(e, BuildEvent::StageSkipped { stage } if stage == "unused")));
    assert_eq!(
        cat(&f, "test.local/multi:1", "/app/out.txt"),
        "built from hello\n"
    );
    assert_eq!(cat(&f, "test.local/multi:1", "/app/flavour"), "plain\n");
    let by: Vec<String> = r
        .config
        .history()
        .iter()
        .filter_map(|h| h.created_by.clone())
        .collect();
    assert!(
        by[2].starts_with("COPY file:") && by[2].ends_with(" in /app/out.txt "),
        "{by:?}"
    );
    assert_eq!(
        by[3],
        "RUN |1 FLAVOUR=plain /bin/sh -c echo \"$FLAVOUR\" > /app/flavour && rm /bin/true # buildkit"
    );

    // Nothing changed: every layer step is cached and no blob is written
    // (the times in the image are SOURCE_DATE_EPOCH's, see `fixture`).
    let blobs = f.blobs();
    let (again, events) = f.build(MULTI, |o| o.tags = vec!["test.local/multi:1".into()]);
    let again = again.expect("rebuild");
    assert_eq!((again.steps, again.cached), (5, 5));
    assert_eq!(cached_steps(&events), 5);
    assert_eq!(again.image_id, r.image_id);
    assert_eq!(f.blobs(), blobs, "a fully cached rebuild writes no blob");

    // One copied file changed: its COPY and every step after it run again,
    // the RUN before it is cached.
    std::fs::write(f.context().join("greeting.txt"), "bonjour\n").unwrap();
    let (changed, events) = f.build(MULTI, |o| o.tags = vec!["test.local/multi:2".into()]);
    let changed = changed.expect("changed");
    assert_eq!((changed.steps, changed.cached), (5, 1), "{events:?}");
    assert!(matches!(
        events
            .iter()
            .find(|e| matches!(e, BuildEvent::StepCached { .. })),
        Some(BuildEvent::StepCached { step: 2 })
    ));
    assert_eq!(
        cat(&f, "test.local/multi:2", "/app/out.txt"),
        "built from bonjour\n"
    );

    // --no-cache runs everything; --no-cache-filter only the stage named.
    let (r, _) = f.build(MULTI, |o| o.no_cache = true);
    assert_eq!(r.expect("no cache").cached, 0);
    let (r, _) = f.build(MULTI, |o| o.no_cache_filter = vec!["build".into()]);
    let r = r.expect("filter");
    assert_eq!((r.steps, r.cached), (5, 2));

    // --target builds only that stage.
    let (r, _) = f.build(MULTI, |o| o.target = Some("build".into()));
    let r = r.expect("target");
    assert_eq!(r.manifest.layers().len(), 4);
    assert_eq!(
        r.config
            .file()
            .config
            .as_ref()
            .unwrap()
            .working_dir
            .as_deref(),
        Some("/src")
    );
}

#[test]
fn onbuild_triggers_run_in_the_child() {
    let Some(f) = fixture() else { return };
    let (r, _) = f.build(
        &format!("FROM {BASE}\nONBUILD ENV FROM_PARENT=1\nONBUILD RUN echo triggered > /trigger\n"),
        |o| o.tags = vec!["test.local/parent:1".into()],
    );
    r.expect("parent");
    let (r, events) = f.build("FROM test.local/parent:1\nRUN cat /trigger\n", |o| {
        o.tags = vec!["test.local/child:1".into()]
    });
    let r = r.expect("child");
    let rc = r.config.file().config.clone().unwrap();
    assert!(rc.env.unwrap().contains(&"FROM_PARENT=1".to_owned()));
    assert_eq!(rc.on_build, None, "triggers are cleared once run");
    assert!(events
        .iter()
        .any(|e| matches!(e, BuildEvent::Output { line, .. } if line == "triggered")));
}

#[test]
fn a_failing_run_stops_the_build_with_its_code_last_lines_and_line() {
    let Some(f) = fixture() else { return };
    let before = f.runtime.snapshots().unwrap().snapshotter().list().unwrap();
    let (r, _) = f.build(
        &format!("FROM {BASE}\nENV A=1\nRUN echo one; echo two >&2; exit 3\nRUN echo never\n"),
        |_| {},
    );
    let e = r.expect_err("fails");
    let BuildError::Step {
        line,
        instruction,
        source,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!((*line, instruction.as_str()), (3, "RUN"));
    let StepError::Run(run) = source else {
        panic!("{source:?}")
    };
    let image_build::run::RunError::Failed { code, last_lines } = &**run else {
        panic!("{run:?}")
    };
    assert_eq!(*code, 3);
    // Lines keep their order within a stream; between stdout and stderr
    // the order is the order they were read in, which is not fixed.
    let mut sorted = last_lines.clone();
    sorted.sort();
    assert_eq!(sorted, ["one", "two"]);
    // No active snapshot, no mount is left behind.
    let after = f.runtime.snapshots().unwrap().snapshotter().list().unwrap();
    assert!(
        after
            .iter()
            .all(|i| i.kind != image_overlay::snapshot::Kind::Active),
        "{after:?}"
    );
    assert!(after.len() >= before.len());
    let mounts = image_runtime::mountinfo::mounts_under(f.tmp.path()).unwrap();
    assert!(mounts.is_empty(), "{mounts:?}");
}

#[test]
fn gc_beside_a_build_removes_nothing_it_needs() {
    let Some(f) = fixture() else { return };
    std::fs::write(f.context().join("a"), "a\n").unwrap();
    let store_path = f.tmp.path().join("store");
    let mut options = BuildOptions::new(f.context());
    options.dockerfile_text = Some(format!(
        "FROM {BASE}\nCOPY a /a\nRUN cat /a > /b\nRUN cat /b > /c\nCOPY a /d\n"
    ));
    options.tags = vec!["test.local/gc:1".into()];
    let mut collections = 0;
    let mut observer = |e: &BuildEvent| {
        if matches!(e, BuildEvent::StepDone { .. }) {
            // Another handle on the store, in another thread, as another
            // imagectl would be: gc at grace 0 between every two steps.
            let path = store_path.clone();
            std::thread::spawn(move || {
                let other = OciDir::open(&path).expect("open");
                other
                    .gc(&image_store::GcOptions::default().grace(std::time::Duration::ZERO))
                    .expect("gc")
            })
            .join()
            .expect("gc thread");
            collections += 1;
        }
    };
    let r = f.builder().build(&options, &mut observer).expect("build");
    assert_eq!(collections, 5);
    // Everything the image needs is there.
    let image = image_store::resolve_image(&f.store, "test.local/gc:1", None).expect("image");
    for (digest, _) in image.blobs() {
        assert!(f.store.exists(&digest).unwrap(), "{digest} collected");
    }
    assert_eq!(image.id(), &r.image_id);
    assert_eq!(cat(&f, "test.local/gc:1", "/c"), "a\n");
}

/// Builds `text` on another thread and waits at most `secs` for it: a
/// build whose work grows faster than its input never returns in time.
fn build_within(f: &Fixture, text: String, secs: u64) -> Result<BuildResult, BuildError> {
    let store = OciDir::open(f.tmp.path().join("store")).expect("store");
    let runtime = f.runtime.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut options = BuildOptions::default();
        options.dockerfile_text = Some(text);
        let r = Builder::new(&store, &runtime).build(&options, &mut |_: &BuildEvent| {});
        let _ = tx.send(r);
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .expect("the build did not finish in time")
}

/// ENV pairs each cost the same however long `Env` is: 65,536 names, then
/// 400,000 replacements of the last one. Scanning `Env` for each pair (as
/// the first version did) is 26 billion comparisons: a quarter of an hour,
/// not seconds.
#[test]
fn env_pairs_cost_the_same_however_long_env_is() {
    let Some(f) = fixture() else { return };
    let mut text = String::from("FROM scratch\n");
    let names: Vec<String> = (0..65_536 - 1).map(|i| format!("K{i}=v")).collect();
    for chunk in names.chunks(1000) {
        text.push_str(&format!("ENV {}\n", chunk.join(" ")));
    }
    let last = vec!["LAST=x"; 1000].join(" ");
    for _ in 0..400 {
        text.push_str(&format!("ENV {last}\n"));
    }
    let r = build_within(&f, text, 300).expect("build");
    let env = r.config.file().config.clone().unwrap().env.unwrap();
    assert_eq!(env.len(), 65_536);
    assert_eq!(env.last().map(String::as_str), Some("LAST=x"));
}

/// The config's lists are bounded: one more ENV name than a config may
/// hold, or more ports named by EXPOSE ranges than a stage may name, is an
/// error naming the instruction, not a config nothing can read.
#[test]
fn config_lists_and_expose_ranges_are_bounded() {
    let Some(f) = fixture() else { return };
    let mut text = String::from("FROM scratch\n");
    let names: Vec<String> = (0..65_537).map(|i| format!("K{i}=v")).collect();
    for chunk in names.chunks(1000) {
        text.push_str(&format!("ENV {}\n", chunk.join(" ")));
    }
    let e = build_within(&f, text, 120).expect_err("too many names");
    assert!(
        matches!(&e, BuildError::Step { line: 67, source: StepError::Limit(l), .. } if l.field == "Env"),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    let text = format!("FROM scratch\n{}", "EXPOSE 0-65535\n".repeat(300));
    let e = build_within(&f, text, 120).expect_err("too many ports");
    assert!(
        matches!(
            &e,
            BuildError::Step {
                line: 6,
                source: StepError::Invalid { what: "port", .. },
                ..
            }
        ),
        "{e:?}"
    );
}

/// The tracker's interrupt stops the build between steps: the build fails
/// as cancelled, and nothing is tagged.
#[test]
fn an_interrupt_stops_the_build_between_steps() {
    let Some(f) = fixture() else { return };
    let interrupt = image_core::progress::Interrupt::new();
    let mut options = BuildOptions::new(f.context());
    options.dockerfile_text = Some(format!(
        "FROM {BASE}\nRUN echo one > /one\nRUN echo two > /two\n"
    ));
    options.tags = vec!["test.local/interrupted:1".into()];
    options.tracker = Some(image_core::Tracker::default().with_interrupt(interrupt.clone()));
    let mut started = Vec::new();
    let r = f.builder().build(&options, &mut |e: &BuildEvent| {
        if let BuildEvent::StepStarted { step, .. } = e {
            started.push(*step);
        }
        if let BuildEvent::StepDone { step: 2, .. } = e {
            interrupt.set();
        }
    });
    let e = r.expect_err("interrupted");
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e:?}");
    assert_eq!(started, [1, 2], "no step starts after the interrupt");
    assert!(image_store::resolve_image(&f.store, "test.local/interrupted:1", None).is_err());
}
