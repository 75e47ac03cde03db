//! The build engine end to end, as root, on a real store, real snapshots
//! and mounts: base images are made in the test from Debian's
//! busybox-static (no network). A missing tool or privilege skips a test
//! loudly unless CI=true, where it fails.

use std::collections::BTreeMap;

use image_build::build::{BuildError, BuildEvent, BuildOptions, BuildResult, Builder, StepError};
use image_core::config::ConfigFile;
use image_core::{Classify, ErrorKind, Platform};
use image_store::{OciDir, Provider};

mod fifo;
mod support;
use fifo::FifoProbe;
use support::{count_events, docker_format_base, error_chain, fixture, Fixture, BASE};

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
    image_testsupport::chain::assert_said_once(&e);
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
    image_testsupport::chain::assert_said_once(&e);
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
    count_events(events, |e| matches!(e, BuildEvent::StepCached { .. }))
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

/// A base image's ONBUILD trigger is one instruction, as BuildKit
/// requires of the triggers it runs ("onbuild trigger should be a single
/// expression"): a trigger of several lines ran each of them, and a FROM
/// in one started a stage whose instructions were run in the child (or,
/// alone, was dropped without a word). Each is now the trigger's error at
/// the FROM that named the base, and nothing is built; a heredoc, one
/// instruction over several lines, still runs.
#[test]
fn a_base_images_triggers_are_one_instruction_each() {
    use image_build::dockerfile::Problem;
    use image_core::config::RunConfig;
    let Some(f) = fixture() else { return };
    let base = |name: &str, trigger: &str| {
        let mut b =
            image_build::ImageBuilder::scratch(&f.store, &Platform::host()).expect("builder");
        b.config_mut().config = Some(RunConfig {
            on_build: Some(vec![trigger.to_owned()]),
            ..RunConfig::default()
        });
        b.commit(&[name]).expect("base");
    };
    for (i, trigger) in [
        "LABEL a=1\nLABEL b=2",
        "FROM scratch",
        "LABEL a=1\nFROM scratch\nLABEL b=2",
        "",
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("test.local/trigger:{i}");
        base(&name, trigger);
        let (r, _) = f.build(&format!("FROM {name}\nLABEL c=3\n"), |_| {});
        let Err(e) = r else {
            panic!("{trigger:?}: built");
        };
        assert!(
            matches!(&e, BuildError::Step { line: 1, source: StepError::Trigger { source, .. }, .. }
                if matches!(source.problem, Problem::TriggerNotOneInstruction)),
            "{trigger:?}: {e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
    base("test.local/trigger:heredoc", "COPY <<EOF /f\nhi\nEOF");
    let (r, _) = f.build("FROM test.local/trigger:heredoc\n", |_| {});
    r.expect("a heredoc trigger");
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
    image_testsupport::chain::assert_said_once(&e);
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
    let mut options = BuildOptions::default();
    options.dockerfile_text = Some(text);
    build_options_within(f, options, secs)
}

/// Builds as `options` say on another thread (not joined: a build blocked
/// in a system call cannot be stopped) and waits at most `secs` for it.
fn build_options_within(
    f: &Fixture,
    options: BuildOptions,
    secs: u64,
) -> Result<BuildResult, BuildError> {
    let store = OciDir::open(f.tmp.path().join("store")).expect("store");
    let runtime = f.runtime.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = Builder::new(&store, &runtime).build(&options, &mut |_: &BuildEvent| {});
        let _ = tx.send(r);
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .expect("the build did not finish in time")
}

/// The context's own `Dockerfile` (when none is named) is one of the
/// context's files, and is read as they are: beneath the context, so a
/// link out of it is an error (it read the host's file as the Dockerfile,
/// and a parse error showed its first word), and a regular file only, so a
/// FIFO is refused at once and unopened (the build waited on it for ever).
/// A link that stays inside the context is followed there.
#[test]
fn the_contexts_own_dockerfile_is_read_beneath_it_and_only_if_regular() {
    let Some(f) = fixture() else { return };
    let outside = f.tmp.path().join("outside");
    std::fs::write(&outside, "FROM scratch\nLABEL read=outside\n").unwrap();
    let dockerfile = f.context().join("Dockerfile");
    let build = || build_options_within(&f, BuildOptions::new(f.context()), 30);
    let refused = |what: &str, e: BuildError| {
        assert!(
            matches!(&e, BuildError::Read { path, .. } if *path == dockerfile),
            "{what}: {e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}: {e:?}");
    };
    for link in [outside.clone(), "../outside".into()] {
        std::os::unix::fs::symlink(&link, &dockerfile).unwrap();
        refused("a link out", build().expect_err("a link out"));
        std::fs::remove_file(&dockerfile).unwrap();
    }
    let fifo = FifoProbe::new(&dockerfile);
    refused("a FIFO", build().expect_err("a FIFO"));
    assert!(!fifo.was_opened(), "the FIFO was opened for reading");
    std::fs::remove_file(&dockerfile).unwrap();

    std::fs::write(
        f.context().join("inside"),
        "FROM scratch\nLABEL read=inside\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("inside", &dockerfile).unwrap();
    let r = build().expect("a link inside the context");
    let labels = config(&r).config.clone().unwrap().labels.unwrap();
    assert_eq!(labels["read"], "inside");
}

/// With no Dockerfile named, a context without `Dockerfile` gives its
/// lowercase `dockerfile` (as Docker's CLI, `getDockerfileRelPath`), read
/// as safely (a link out of the context is refused); `Dockerfile` comes
/// first when both are there.
#[test]
fn a_lowercase_dockerfile_is_read_when_the_context_has_no_dockerfile() {
    let Some(f) = fixture() else { return };
    let lower = f.context().join("dockerfile");
    let build = || build_options_within(&f, BuildOptions::new(f.context()), 30);
    let label = |r: &BuildResult| config(r).config.clone().unwrap().labels.unwrap()["read"].clone();
    std::fs::write(&lower, "FROM scratch\nLABEL read=lower\n").unwrap();
    assert_eq!(label(&build().expect("a lowercase dockerfile")), "lower");
    std::fs::write(
        f.context().join("Dockerfile"),
        "FROM scratch\nLABEL read=upper\n",
    )
    .unwrap();
    assert_eq!(label(&build().expect("both")), "upper");
    std::fs::remove_file(f.context().join("Dockerfile")).unwrap();
    std::fs::remove_file(&lower).unwrap();
    let outside = f.tmp.path().join("outside");
    std::fs::write(&outside, "FROM scratch\nLABEL read=outside\n").unwrap();
    std::os::unix::fs::symlink(&outside, &lower).unwrap();
    let e = build().expect_err("a link out");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e:?}");
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

/// A chain of stages costs its input, not stages times config: 20,000
/// stages, each `FROM` the one before and adding an ENV, on a first stage
/// of 30,000 ENV names. Remaking each stage's expansion scope from its
/// base's `Env` (as before) is 600 million entries copied and sorted,
/// minutes; handed on from stage to stage, it is seconds.
#[test]
fn a_chain_of_stages_costs_its_input_not_stages_times_config() {
    let Some(f) = fixture() else { return };
    let names: Vec<String> = (0..30_000).map(|i| format!("A{i}=1")).collect();
    let mut text = format!("FROM scratch AS s0\nENV {}\n", names.join(" "));
    for k in 1..20_000 {
        text.push_str(&format!("FROM s{} AS s{k}\nENV X{}={k}\n", k - 1, k % 7));
    }
    // Each stage expands in the ENV its chain of stages made.
    text.push_str("ENV SEEN=${A29999}-${X5}\n");
    let r = build_within(&f, text, 120).expect("build");
    let env = r.config.file().config.clone().unwrap().env.unwrap();
    assert_eq!(env.len(), 30_008);
    let x5 = (1..20_000).rev().find(|k| k % 7 == 5).unwrap();
    assert_eq!(env.last(), Some(&format!("SEEN=1-{x5}")));
}

/// An ADD of a URL or a git source has no network here: without a cache
/// record for its key (what names the source: the URL, the ref, the
/// checksum) the build fails naming the source; with one (made where the
/// content was fetched, or imported), the step is that record's layer.
#[test]
fn a_remote_add_is_taken_from_the_cache_or_fails_naming_its_source() {
    use image_build::cache::{Cache, CacheKey, CachedLayer};
    use image_build::copy::{remote_digest, CopyError, CopySpec};
    let Some(f) = fixture() else { return };
    let url = "https://example.invalid/app.txt";
    let add = format!("ADD --chmod=644 {url} /app.txt");
    let dockerfile = format!("FROM scratch\n{add}\n");

    // The step's error is the copy's, naming the URL.
    let names_remote = |e: &BuildError| {
        matches!(e, BuildError::Step { line: 2, source: StepError::Copy(c), .. }
            if matches!(&**c, CopyError::Remote { source } if source == url))
            && std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source())
                .any(|e| e.to_string().contains(url))
    };
    let (r, _) = f.build(&dockerfile, |_| {});
    let e = r.expect_err("no network and no record");
    image_testsupport::chain::assert_said_once(&e);
    assert!(names_remote(&e), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Unsupported);

    // The content as a build with network would have made it: a layer
    // holding /app.txt, recorded under the step's key.
    std::fs::write(f.context().join("app.txt"), "fetched\n").unwrap();
    let (made, _) = f.build("FROM scratch\nCOPY --chmod=644 app.txt /app.txt\n", |_| {});
    let made = made.expect("the layer");
    let layer = image_build::Layer {
        descriptor: made.manifest.layers()[0].clone(),
        diff_id: made.config.diff_ids()[0].clone(),
    };
    let mut spec = CopySpec::new(vec![url.to_owned()], "/app.txt", "/");
    spec.add = true;
    spec.chmod = Some("644".into());
    let key = CacheKey::base(None, &Platform::host())
        .child(&add, &[remote_digest(&spec).unwrap().expect("remote")]);
    // The fixture's builds are reproducible (SOURCE_DATE_EPOCH): a layer
    // step's key says for which epoch its layer was packed.
    let epoch = std::env::var("SOURCE_DATE_EPOCH").expect("the fixture's epoch");
    let key = key.packed_for(Some(epoch.parse().expect("a number")));
    let cache = Cache::open(&f.store).expect("cache");
    cache
        .record(
            &key,
            &CachedLayer {
                layer: layer.clone(),
                created_by: format!("ADD {url} /app.txt"),
                created: None,
            },
        )
        .expect("record");
    cache.flush().expect("flush");

    let (r, events) = f.build(&dockerfile, |_| {});
    let r = r.expect("the cached layer");
    assert_eq!((r.steps, r.cached), (1, 1));
    assert_eq!(cached_steps(&events), 1);
    assert_eq!(r.manifest.layers(), std::slice::from_ref(&layer.descriptor));
    assert_eq!(r.config.diff_ids(), &[layer.diff_id]);

    // Another checksum is another key: no record, the clear error again.
    let (r, _) = f.build(
        &format!(
            "FROM scratch\nADD --checksum=sha256:{} --chmod=644 {url} /app.txt\n",
            "0".repeat(64)
        ),
        |_| {},
    );
    let e = r.expect_err("another key");
    image_testsupport::chain::assert_said_once(&e);
    assert!(names_remote(&e), "{e:?}");
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
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(&e, BuildError::Step { line: 67, source: StepError::Limit(l), .. } if l.field == "Env"),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    let text = format!("FROM scratch\n{}", "EXPOSE 0-65535\n".repeat(300));
    let e = build_within(&f, text, 120).expect_err("too many ports");
    image_testsupport::chain::assert_said_once(&e);
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

/// The provenance names the Dockerfile by its file name, as BuildKit's
/// (buildx passes the base name): a Dockerfile named by a path (`-f`)
/// kept that path, a directory of the builder's machine, in a record
/// attached to the image and pushed with it.
#[test]
fn the_provenance_names_the_dockerfile_without_the_builders_path() {
    let Some(f) = fixture() else { return };
    let dir = f.tmp.path().join("home/alice/private-project");
    std::fs::create_dir_all(&dir).unwrap();
    let dockerfile = dir.join("app.Dockerfile");
    std::fs::write(&dockerfile, "FROM scratch\nLABEL a=b\n").unwrap();
    let mut options = BuildOptions::new(f.context());
    options.dockerfile = dockerfile;
    options.provenance = true;
    let r = build_options_within(&f, options, 60).expect("build");
    let referrer = r.provenance.expect("a provenance referrer");
    let manifest = image_core::Manifest::from_bytes(
        f.store
            .read_descriptor_to_vec(&referrer, 1 << 20)
            .expect("manifest"),
    )
    .expect("manifest");
    let statement = f
        .store
        .read_descriptor_to_vec(&manifest.layers()[0], 1 << 20)
        .expect("statement");
    let json: serde_json::Value = serde_json::from_slice(&statement).expect("json");
    assert_eq!(
        json["predicate"]["invocation"]["configSource"]["entryPoint"],
        "app.Dockerfile"
    );
    let text = String::from_utf8_lossy(&statement);
    assert!(!text.contains("private-project"), "{text}");
}

/// The config's bytes are bounded as its entries are, and so is the text
/// of the history a build adds: ENV, LABEL or VOLUME copying a half-MiB
/// ARG under a few new names pass image-core's `MAX_CONFIG_FIELD_BYTES`
/// (an image no container can be made from: the runtime checks it), and a
/// label set again and again adds a half-MiB history entry each time, past
/// `MAX_HISTORY_BYTES` (a config larger than the store's
/// `MAX_DOCUMENT_SIZE` is written, then read by nothing). Each was a
/// build that went on; each is now an error naming the instruction.
#[test]
fn config_bytes_and_the_history_are_bounded() {
    use image_build::build::MAX_HISTORY_BYTES;
    let Some(f) = fixture() else { return };
    let half = "v".repeat(image_build::dockerfile::MAX_EXPANDED / 2);
    let copies = |line: &str, n: usize| -> String {
        (0..n)
            .map(|i| format!("{}\n", line.replace("{i}", &i.to_string())))
            .collect()
    };
    let fields = image_core::config::MAX_CONFIG_FIELD_BYTES / half.len() + 1;
    for (field, line) in [
        ("Env", "ENV E{i}=$V"),
        ("Labels", "LABEL l{i}=$V"),
        ("Volumes", "VOLUME /v{i}$V"),
    ] {
        let text = format!("FROM scratch\nARG V={half}\n{}", copies(line, fields));
        let Err(e) = build_within(&f, text, 120) else {
            panic!("{field}: built");
        };
        assert!(
            matches!(&e, BuildError::Step { line, source: StepError::Limit(l), .. }
                if l.field == field && l.unit == "bytes" && *line == 1 + fields),
            "{field}: {e}"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
    // The ARG's entry (its value written out) is one of them.
    let entries = MAX_HISTORY_BYTES / half.len() + 1;
    let text = format!(
        "FROM scratch\nARG V={half}\n{}",
        copies("LABEL l=$V", entries)
    );
    let Err(e) = build_within(&f, text, 120) else {
        panic!("history: built");
    };
    assert!(
        matches!(&e, BuildError::Step { line, source: StepError::History { limit, .. }, .. }
            if *line == entries && *limit == MAX_HISTORY_BYTES),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

/// Each config field and the history within their bounds can still add up
/// past what a store reads back (`MAX_DOCUMENT_SIZE`): nearly 4 MiB of
/// `Env`, a large label, and their history entries. Such a config
/// was written and tagged, and then nothing could read the image; the
/// commit now refuses it, typed, and tags nothing.
#[test]
fn a_config_larger_than_a_store_reads_is_refused_and_nothing_tagged() {
    use image_build::BuilderError;
    let Some(f) = fixture() else { return };
    let value = "v".repeat(950_000);
    let mut text = format!("FROM scratch\nARG V={value}\n");
    for i in 0..4 {
        text.push_str(&format!("ENV E{i}=$V\n"));
    }
    text.push_str("LABEL l=$V\n");
    let mut options = BuildOptions::default();
    options.dockerfile_text = Some(text);
    options.tags = vec!["test.local/large:1".into()];
    let Err(e) = build_options_within(&f, options, 120) else {
        panic!("built");
    };
    assert!(
        matches!(&e, BuildError::Commit(b) if matches!(**b, BuilderError::ConfigTooLarge { .. })),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(image_store::resolve_image(&f.store, "test.local/large:1", None).is_err());
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
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e:?}");
    assert_eq!(started, [1, 2], "no step starts after the interrupt");
    assert!(image_store::resolve_image(&f.store, "test.local/interrupted:1", None).is_err());
}

/// A Docker v2 schema 2 manifest has no annotations: a build whose result
/// keeps a Docker base's format refuses `--annotation` and
/// `--oci-annotations` with a typed error naming the format, and tags
/// nothing; without them the same build gives a Docker manifest.
#[test]
fn annotations_on_a_docker_format_image_are_refused() {
    let Some(f) = fixture() else { return };
    let base = "test.local/busybox-docker:1";
    docker_format_base(&f, base);
    let text = format!("FROM {base}\nRUN echo hi > /hi\nLABEL a=b\n");
    let (r, _) = f.build(&text, |o| o.tags = vec!["test.local/plain:1".into()]);
    let built = r.expect("without annotations");
    assert_eq!(
        *built.manifest.media_type(),
        image_core::MediaType::DockerManifest
    );

    type Ask = fn(&mut BuildOptions);
    let asks: [(&str, Ask); 2] = [
        ("annotation", |o| {
            o.annotations.insert("org.example.note".into(), "x".into());
        }),
        ("oci-annotations", |o| o.oci_annotations = true),
    ];
    for (what, ask) in asks {
        let tag = format!("test.local/annotated-{what}:1");
        let (r, _) = f.build(&text, |o| {
            o.tags = vec![tag.clone()];
            ask(o);
        });
        let e = r.expect_err(what);
        image_testsupport::chain::assert_said_once(&e);
        assert!(
            matches!(&e, BuildError::Commit(b)
                if matches!(**b, image_build::builder::BuilderError::Annotations { .. })),
            "{what}: {e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{what}");
        let chain = error_chain(&e);
        assert!(
            chain.contains("application/vnd.docker.distribution.manifest.v2+json")
                && chain.contains("annotations"),
            "{what}: {chain}"
        );
        assert!(
            image_store::resolve_image(&f.store, &tag, None).is_err(),
            "{what}: nothing tagged"
        );
    }
}
