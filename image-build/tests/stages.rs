//! Stages as a graph, end to end as root on a real store, snapshots and
//! mounts: independent stages build at the same time (bounded by
//! `jobs`), a failure stops the others cleanly, and reproducible builds
//! (`SOURCE_DATE_EPOCH`) give the same image in two stores at two times.
//! The base image is made in the test from Debian's busybox-static (no
//! network). A missing tool or privilege skips a test loudly unless
//! CI=true, where it fails.

mod support;

use std::path::Path;
use std::time::Duration;

use image_build::build::{BuildError, BuildEvent, BuildOptions, StepError};
use image_core::{Classify, ErrorKind};
use support::{fixture_with, make_base, EpochEnv, Fixture, BASE};

/// The fixture of these tests: no build reads the environment's epoch.
fn fixture() -> Option<Fixture> {
    fixture_with(EpochEnv::Removed)
}

/// A TCP port of the loopback no one listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The stage each step started belongs to, in the order they started.
fn started_stages(events: &[BuildEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::StepStarted { stage, .. } => Some(stage.clone()),
            _ => None,
        })
        .collect()
}

/// Two stages that each wait for the other (one listens and waits for a
/// connection, the other connects, retrying until the first listens):
/// built one after the other they never finish; built at the same time
/// both do. The final stage waits for both.
#[test]
fn independent_stages_build_at_the_same_time() {
    let Some(f) = fixture() else { return };
    let port = free_port();
    let text = format!(
        "FROM {BASE} AS listens
RUN --network=host echo from-listens | nc -l -p {port} > /heard
FROM {BASE} AS connects
RUN --network=host until echo from-connects | nc 127.0.0.1 {port} > /heard; do sleep 0.1; done
FROM {BASE}
COPY --from=listens /heard /a
COPY --from=connects /heard /b
"
    );
    let (r, events) = f.build_within(&text, 120, |o| {
        o.jobs = 2;
        o.no_cache = true;
    });
    let r = r.expect("build");
    assert_eq!((r.steps, r.cached), (4, 0));
    let stages = started_stages(&events);
    // The final stage starts only once both stages it copies from are
    // built.
    let last = stages.iter().position(|s| s == "stage-2").expect("final");
    assert!(stages[..last].iter().filter(|s| *s != "stage-2").count() == 4);
    // Every event of a step names a step that started (so the display can
    // keep their lines apart).
    let mut started = std::collections::BTreeSet::new();
    for e in &events {
        match e {
            BuildEvent::StepStarted { step, .. } => assert!(started.insert(*step)),
            BuildEvent::Output { step, .. }
            | BuildEvent::StepCached { step }
            | BuildEvent::StepDone { step, .. } => assert!(started.contains(step), "{e:?}"),
            _ => {}
        }
    }
    f.assert_clean();
}

/// With one job the stages build one by one, in file order.
#[test]
fn one_job_builds_the_stages_in_file_order() {
    let Some(f) = fixture() else { return };
    let text = format!(
        "FROM {BASE} AS a
RUN echo a > /a
FROM {BASE} AS b
RUN echo b > /b
FROM {BASE}
COPY --from=b /b /b
COPY --from=a /a /a
"
    );
    let (r, events) = f.build_within(&text, 120, |o| o.jobs = 1);
    let r = r.expect("build");
    assert_eq!(r.steps, 4);
    assert_eq!(
        started_stages(&events),
        ["a", "a", "b", "b", "stage-2", "stage-2", "stage-2"]
    );
    let steps: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::StepStarted { step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, (1..=7).collect::<Vec<_>>());
    f.assert_clean();
}

/// A stage that fails stops a sibling still running (its RUN sleeps for
/// ten minutes once the failing stage has reached it): the build fails
/// with the first failure's error, long before the sleep would end, and
/// leaves no container, active snapshot, mount or lease.
#[test]
fn a_failing_stage_cancels_a_running_sibling() {
    let Some(f) = fixture() else { return };
    let port = free_port();
    let text = format!(
        "FROM {BASE} AS sleeps
RUN --network=host echo ready | nc -l -p {port}; sleep 600
FROM {BASE} AS fails
RUN --network=host until nc 127.0.0.1 {port} </dev/null; do sleep 0.1; done; exit 7
FROM {BASE}
COPY --from=sleeps /bin/sh /a
COPY --from=fails /bin/sh /b
"
    );
    let (r, events) = f.build_within(&text, 120, |o| {
        o.jobs = 4;
        o.no_cache = true;
        o.tags = vec!["test.local/cancelled:1".into()];
    });
    let e = r.expect_err("fails");
    image_testsupport::chain::assert_said_once(&e);
    let BuildError::Step { line, source, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*line, 4, "the first failure is reported: {e:?}");
    let StepError::Run(run) = source else {
        panic!("{source:?}")
    };
    assert!(
        matches!(**run, image_build::run::RunError::Failed { code: 7, .. }),
        "{run:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, BuildEvent::Output { line, .. } if line == "ready")),
        "the sleeping stage was running when its sibling failed: {events:?}"
    );
    assert!(!started_stages(&events).contains(&"stage-2".to_owned()));
    assert!(image_store::resolve_image(&f.store, "test.local/cancelled:1", None).is_err());
    f.assert_clean();
}

/// Writes a tar archive holding `files` (name, content) at `path`.
fn write_tar(path: &Path, files: &[(&str, &str)]) {
    let mut tar = image_testsupport::tar::TarBuf::new();
    for (name, data) in files {
        tar.file(name, data.as_bytes());
    }
    std::fs::write(path, tar.end()).expect("tar");
}

const REPRODUCIBLE: &str = "FROM test.local/busybox:1 AS build
RUN mkdir -p /out/sub && echo built > /out/sub/file && touch /out/stamp
COPY hello.txt /out/
FROM test.local/busybox:1
COPY --from=build /out /app
ADD files.tar /added/
RUN echo done > /done && mkdir -p /var/new
ENV DONE=1
";

/// A context for [`REPRODUCIBLE`] in `f`.
fn reproducible_context(f: &Fixture) {
    std::fs::write(f.context().join("hello.txt"), "hello\n").unwrap();
    write_tar(
        &f.context().join("files.tar"),
        &[("one.txt", "one\n"), ("two.txt", "two\n")],
    );
}

/// With a source date epoch, two builds of the same Dockerfile and context
/// in two stores, seconds apart (so every file they make has another
/// mtime, every step another clock), give the same image; without one
/// they do not. A cached rebuild with the epoch gives the same image too.
#[test]
fn a_source_date_epoch_makes_the_image_reproducible() {
    let (Some(a), Some(b)) = (fixture(), fixture()) else {
        return;
    };
    reproducible_context(&a);
    reproducible_context(&b);
    let epoch = 1_700_000_000;
    let with = |o: &mut BuildOptions| {
        o.source_date_epoch = Some(epoch);
        o.no_cache = true;
    };
    let (ra, _) = a.build_within(REPRODUCIBLE, 120, with);
    let ra = ra.expect("build in store A");
    std::thread::sleep(Duration::from_secs(2));
    let (rb, _) = b.build_within(REPRODUCIBLE, 120, with);
    let rb = rb.expect("build in store B");
    assert_eq!(
        ra.manifest.descriptor().digest(),
        rb.manifest.descriptor().digest(),
        "{:#?}\n{:#?}",
        ra.config,
        rb.config
    );
    let stamp = image_core::time::rfc3339(epoch);
    assert_eq!(ra.config.file().created.as_deref(), Some(stamp.as_str()));
    let history = ra.config.history();
    // The base's own entry keeps its time; every entry the build added
    // has the epoch.
    assert!(history[1..]
        .iter()
        .all(|h| h.created.as_deref() == Some(stamp.as_str())));

    // The build arg SOURCE_DATE_EPOCH does the same, from the cache.
    let (again, _) = a.build_within(REPRODUCIBLE, 120, |o| {
        o.build_args
            .insert("SOURCE_DATE_EPOCH".into(), epoch.to_string());
    });
    let again = again.expect("cached rebuild");
    assert_eq!(again.cached, again.steps);
    assert_eq!(again.image_id, ra.image_id);

    // The control: without an epoch, two builds seconds apart differ.
    let without = |o: &mut BuildOptions| o.no_cache = true;
    let (ca, _) = a.build_within(REPRODUCIBLE, 120, without);
    std::thread::sleep(Duration::from_secs(2));
    let (cb, _) = b.build_within(REPRODUCIBLE, 120, without);
    assert_ne!(
        ca.expect("control A").manifest.descriptor().digest(),
        cb.expect("control B").manifest.descriptor().digest()
    );
    a.assert_clean();
    b.assert_clean();
}

/// A build arg SOURCE_DATE_EPOCH that is not a number is refused, typed.
#[test]
fn a_bad_source_date_epoch_is_refused() {
    let mut options = BuildOptions::default();
    options
        .build_args
        .insert("SOURCE_DATE_EPOCH".into(), "yesterday".into());
    let e = options.epoch().expect_err("not a number");
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, BuildError::SourceDateEpoch(_)), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    options.source_date_epoch = Some(5);
    assert_eq!(options.epoch().unwrap(), Some(5));
}

/// The paths of a layer's entries, with their kind and owner.
fn layer_entries(f: &Fixture, layer: &image_core::Descriptor) -> Vec<(String, String)> {
    use image_core::DescriptorExt;
    use image_store::Provider;
    let digest = layer.checked_digest().expect("digest");
    let mut out = Vec::new();
    image_overlay::list::list(
        f.store.reader(&digest).expect("blob"),
        &image_overlay::list::ListOptions::default(),
        |e| out.push((e.path_lossy(), format!("{:?} {}:{}", e.kind, e.uid, e.gid))),
    )
    .expect("list");
    out.sort();
    out
}

/// `COPY --link` makes its layer in an empty snapshot: the layer holds the
/// files copied and the directories made for them, nothing of the base;
/// its cache key ignores the layers below, so a rebuild on a changed base
/// reuses it (the same layer), while a plain COPY after it runs again; a
/// RUN after both sees the files of both on the new base.
#[test]
fn a_link_copy_is_reused_over_a_changed_base() {
    let Some(f) = fixture() else { return };
    std::fs::write(f.context().join("hello.txt"), "hello\n").unwrap();
    std::fs::write(f.context().join("plain.txt"), "plain\n").unwrap();
    let text = format!(
        "FROM {BASE}
WORKDIR /srv
COPY --link hello.txt app/linked/
COPY plain.txt /app/plain/
RUN cat /srv/app/linked/hello.txt /app/plain/plain.txt; ls /extra.txt || true
"
    );
    let (first, _) = f.build_within(&text, 120, |_| {});
    let first = first.expect("first build");
    assert_eq!((first.steps, first.cached), (3, 0));
    let link_layer = first.manifest.layers()[1].clone();
    let dir = |p: &str| (p.to_owned(), "Directory 0:0".to_owned());
    assert_eq!(
        layer_entries(&f, &link_layer),
        [
            dir("srv/"),
            dir("srv/app/"),
            dir("srv/app/linked/"),
            (
                "srv/app/linked/hello.txt".to_owned(),
                "Regular 0:0".to_owned()
            ),
        ]
    );

    // Another base under the same name: one more file.
    make_base(&f.store, f.tmp.path(), &[("extra.txt", "extra\n")]);
    let (second, events) = f.build_within(&text, 120, |_| {});
    let second = second.expect("rebuild on the new base");
    assert_eq!((second.steps, second.cached), (3, 1), "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, BuildEvent::StepCached { step: 2 })),
        "the --link COPY (step 2) is the cached one: {events:?}"
    );
    assert_eq!(second.manifest.layers()[1], link_layer);
    let lines: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Output { line, .. } => Some(line.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(lines, ["hello", "plain", "/extra.txt"]);
    f.assert_clean();
}
