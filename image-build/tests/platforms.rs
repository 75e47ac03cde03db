//! Multi-platform builds and the checks a build makes before any step
//! runs, end to end as root on a real store: the cross-compile pattern
//! (a `FROM --platform=$BUILDPLATFORM` stage shared by the platforms, a
//! final stage per platform on a two-platform base index made in the test
//! from busybox-static), the index and where each annotation lands, read
//! back by our store and by skopeo.

use std::collections::HashSet;

use image_build::build::{BuildError, BuildEvent, BuildOptions, BuildResult, StepError};
use image_build::builder::BuilderError;
use image_core::{Classify, ErrorKind, Platform};
use image_store::OciDir;

mod support;
use support::{
    count_events, docker_format_base, error_chain, fixture, foreign_platform, two_platform_base,
    Fixture, BASE,
};

/// The RUN steps that executed (not from the cache), by their text.
fn runs_executed(events: &[BuildEvent]) -> Vec<String> {
    made(events, "RUN ")
}

/// How many steps starting with `prefix` made their layer (not from the
/// cache).
fn steps_made(events: &[BuildEvent], prefix: &str) -> usize {
    made(events, prefix).len()
}

/// The steps starting with `prefix` that made their layer, by their text.
fn made(events: &[BuildEvent], prefix: &str) -> Vec<String> {
    let cached: HashSet<usize> = events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::StepCached { step } => Some(*step),
            _ => None,
        })
        .collect();
    events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::StepStarted { step, text, .. }
                if text.starts_with(prefix) && !cached.contains(step) =>
            {
                Some(text.clone())
            }
            _ => None,
        })
        .collect()
}

fn steps_started(events: &[BuildEvent]) -> usize {
    count_events(events, |e| matches!(e, BuildEvent::StepStarted { .. }))
}

/// Every check that depends only on the options and the Dockerfile (and
/// the base images' names) fails before any step runs, with the typed
/// error the late check gave: a first stage that RUNs never starts.
#[test]
fn checks_that_need_no_step_fail_before_any_step_runs() {
    let Some(f) = fixture() else { return };
    let docker = "test.local/busybox-docker:1";
    docker_format_base(&f, docker);
    let foreign = foreign_platform();
    // A first stage that would run (and take time) before the last.
    let first = format!("FROM --platform=$BUILDPLATFORM {BASE} AS first\nRUN echo ran > /ran\n");
    type Change = Box<dyn Fn(&mut BuildOptions)>;
    type Expect = fn(&BuildError) -> bool;
    let none: Change = Box::new(|_| {});
    let cases: Vec<(&str, String, Change, Expect, ErrorKind)> = vec![
        (
            "an annotation on a Docker-format result",
            format!("{first}FROM {docker}\nCOPY --from=first /ran /ran\nRUN true\n"),
            Box::new(|o| {
                o.annotations.insert("org.example.note".into(), "x".into());
            }),
            |e| matches!(e, BuildError::Commit(b) if matches!(**b, BuilderError::Annotations { .. })),
            ErrorKind::Unsupported,
        ),
        (
            "OCI annotations on a Docker-format result",
            format!("{first}FROM {docker}\nCOPY --from=first /ran /ran\n"),
            Box::new(|o| o.oci_annotations = true),
            |e| matches!(e, BuildError::Commit(b) if matches!(**b, BuilderError::Annotations { .. })),
            ErrorKind::Unsupported,
        ),
        (
            "an index annotation on one manifest",
            format!("{first}FROM {BASE}\nCOPY --from=first /ran /ran\n"),
            Box::new(|o| {
                o.annotations
                    .insert("index:org.example.i".into(), "x".into());
            }),
            |e| {
                matches!(e, BuildError::AnnotationNeedsIndex { annotation }
                    if annotation == "index:org.example.i")
            },
            ErrorKind::InvalidInput,
        ),
        (
            "an unknown annotation type",
            format!("{first}FROM {BASE}\n"),
            Box::new(|o| {
                o.annotations
                    .insert("manifests:org.example.i".into(), "x".into());
            }),
            |e| matches!(e, BuildError::Annotation { annotation, .. } if annotation == "manifests:org.example.i"),
            ErrorKind::InvalidInput,
        ),
        (
            "FROM --platform for another machine with RUN",
            format!("{first}FROM --platform={foreign} {BASE}\nRUN true\n"),
            none,
            |e| {
                matches!(
                    e,
                    BuildError::Step {
                        line: 3,
                        source: StepError::Invalid {
                            what: "FROM --platform",
                            ..
                        },
                        ..
                    }
                )
            },
            ErrorKind::InvalidInput,
        ),
        (
            "a target platform the host cannot run, with RUN",
            format!("{first}FROM scratch AS out\nCOPY --from=first /ran /ran\nRUN true\n"),
            Box::new(move |o| o.platforms = vec![Platform::host(), foreign_platform()]),
            |e| {
                matches!(e, BuildError::Step { line: 5, instruction, source: StepError::ForeignRun { stage, platform }, .. }
                    if instruction == "RUN" && stage == "out" && **platform == foreign_platform())
            },
            ErrorKind::Unsupported,
        ),
        (
            "a multi-platform build's index as a Docker archive",
            format!("{first}FROM scratch\nCOPY --from=first /ran /ran\n"),
            Box::new(|o| {
                o.platforms = vec![Platform::host(), foreign_platform()];
                o.docker_archive = true;
            }),
            |e| matches!(e, BuildError::IndexInDockerArchive { platforms: 2 }),
            ErrorKind::Unsupported,
        ),
        (
            "a tag that is no name",
            format!("{first}FROM {BASE}\n"),
            Box::new(|o| o.tags = vec!["Not A Name".into()]),
            |e| matches!(e, BuildError::Commit(b) if matches!(**b, BuilderError::InvalidTag { .. })),
            ErrorKind::InvalidInput,
        ),
    ];
    for (what, text, change, expect, kind) in cases {
        let (r, events) = f.build(&text, |o| {
            o.tags.push("test.local/refused:1".into());
            change(o);
        });
        let e = r.expect_err(what);
        image_testsupport::chain::assert_said_once(&e);
        assert!(expect(&e), "{what}: {e:?}");
        assert_eq!(e.kind(), kind, "{what}");
        assert_eq!(
            steps_started(&events),
            0,
            "{what}: no step started: {events:?}"
        );
        assert!(runs_executed(&events).is_empty(), "{what}");
        assert!(
            image_store::resolve_image(&f.store, "test.local/refused:1", None).is_err(),
            "{what}: nothing tagged"
        );
    }
    // The message names the stage and the platform.
    let (r, _) = f.build(&format!("FROM {BASE} AS out\nRUN true\n"), |o| {
        o.platforms = vec![foreign.clone()]
    });
    let e = r.expect_err("foreign RUN");
    image_testsupport::chain::assert_said_once(&e);
    let chain = error_chain(&e);
    assert!(
        chain.contains("stage out") && chain.contains(&foreign.to_string()),
        "{chain}"
    );
}

/// The cross-compile Dockerfile of the test: a build stage on the build
/// platform, one shared step and one per target architecture, copied into
/// a final stage on the base index.
fn cross_compile(base: &str) -> String {
    format!(
        "FROM --platform=$BUILDPLATFORM {BASE} AS build\n\
         RUN mkdir /out && echo shared > /out/shared\n\
         COPY --link hello.txt /in/hello.txt\n\
         ARG TARGETARCH\n\
         ARG TARGETPLATFORM\n\
         RUN echo \"$TARGETARCH\" > /out/arch && echo \"$TARGETPLATFORM\" > /out/platform\n\
         FROM {base}\n\
         COPY --from=build /out/ /out/\n"
    )
}

/// The context of the cross-compile build.
fn cross_context(f: &Fixture) {
    std::fs::write(f.context().join("hello.txt"), "hello\n").expect("context file");
}

/// Options of the cross-compile build: the host's platform and the
/// foreign one, provenance, annotations of every level.
fn cross_options(o: &mut BuildOptions) {
    o.platforms = vec![Platform::host(), foreign_platform()];
    o.tags = vec!["test.local/multi:1".into()];
    o.provenance = true;
    for (k, v) in [
        ("org.example.plain", "m"),
        ("manifest:org.example.manifest", "m2"),
        ("manifest-descriptor:org.example.entry", "d"),
        ("index:org.example.index", "i"),
        ("index-descriptor:org.example.tagged", "t"),
    ] {
        o.annotations.insert(k.into(), v.into());
    }
    let foreign = foreign_platform();
    o.annotations.insert(
        format!("manifest[{foreign}]:org.example.only"),
        "foreign".into(),
    );
}

/// A file of an image, flattened into a fresh directory.
fn file_of(f: &Fixture, image: &image_store::Image, path: &str) -> String {
    let dir = tempfile::tempdir_in(f.tmp.path()).expect("tempdir");
    let root = dir.path().join("root");
    image_overlay::flatten_image(
        &f.store,
        image,
        &root,
        &image_overlay::UnpackOptions::default(),
    )
    .expect("flatten");
    std::fs::read_to_string(root.join(path)).expect(path)
}

fn annotation<'a>(
    map: &'a Option<std::collections::HashMap<String, String>>,
    key: &str,
) -> Option<&'a str> {
    map.as_ref().and_then(|m| m.get(key)).map(String::as_str)
}

/// `--platform host,foreign` with the cross-compile pattern: the shared
/// build stage's platform-free step runs once, its per-target step once
/// per platform; the result is an OCI index, tagged, of two manifests
/// with their platforms, each holding its architecture's file over its
/// own base; annotations land at their levels; each manifest has its
/// provenance referrer; skopeo reads the index; a second build in another
/// store gives the same index digest.
#[test]
fn a_multi_platform_build_makes_an_index_of_each_platforms_image() {
    let Some(f) = fixture() else { return };
    let base = "test.local/base:multi";
    two_platform_base(&f, base);
    cross_context(&f);
    let host = Platform::host();
    let foreign = foreign_platform();
    let (r, events) = f.build(&cross_compile(base), cross_options);
    let r = r.expect("multi-platform build");
    let ran = runs_executed(&events);
    assert_eq!(
        ran.iter().filter(|t| t.contains("echo shared")).count(),
        1,
        "the shared step runs once: {ran:?}"
    );
    assert_eq!(
        ran.iter().filter(|t| t.contains("TARGETARCH")).count(),
        2,
        "the per-target step runs per platform: {ran:?}"
    );
    let index = r.index.clone().expect("an index");
    assert_eq!(*index.media_type(), image_core::MediaType::OciIndex);
    let entries = index.inner().manifests();
    assert_eq!(entries.len(), 2);
    let platforms: Vec<Platform> = entries
        .iter()
        .map(|d| Platform::from(d.platform().as_ref().expect("platform")))
        .collect();
    assert_eq!(platforms, [host.clone(), foreign.clone()]);
    assert_eq!(r.images.len(), 2);
    // Tagged: the index, with its descriptor annotation.
    let tagged = image_store::resolve_reference(&f.store, "test.local/multi:1").expect("tag");
    assert_eq!(tagged.digest().to_string(), index.digest().to_string());
    assert_eq!(
        annotation(tagged.annotations(), "org.example.tagged"),
        Some("t")
    );
    assert_eq!(
        annotation(index.inner().annotations(), "org.example.index"),
        Some("i")
    );
    for (entry, p) in entries.iter().zip([&host, &foreign]) {
        assert_eq!(
            annotation(entry.annotations(), "org.example.entry"),
            Some("d")
        );
        let image = image_store::resolve_image(&f.store, "test.local/multi:1", Some(p))
            .expect("each platform resolves");
        assert_eq!(
            image.manifest_digest().to_string(),
            entry.digest().to_string()
        );
        let config = image.config.file();
        assert_eq!(
            (config.os.as_str(), config.architecture.as_str()),
            ("linux", p.architecture.as_str())
        );
        assert_eq!(
            file_of(&f, &image, "out/arch"),
            format!("{}\n", p.architecture)
        );
        assert_eq!(file_of(&f, &image, "out/platform"), format!("{p}\n"));
        assert_eq!(file_of(&f, &image, "out/shared"), "shared\n");
        let manifest = image.manifest.inner().annotations();
        assert_eq!(annotation(manifest, "org.example.plain"), Some("m"));
        assert_eq!(annotation(manifest, "org.example.manifest"), Some("m2"));
        assert_eq!(
            annotation(manifest, "org.example.only"),
            (p == &foreign).then_some("foreign")
        );
        assert_eq!(annotation(manifest, "org.example.index"), None);
        // Each platform's own base: the foreign one has its payload.
        if p == &foreign {
            assert_eq!(
                file_of(&f, &image, "payload"),
                format!("{} payload\n", p.architecture)
            );
        }
        let referrers = image_store::referrers::referrers(&f.store, image.manifest_digest())
            .expect("referrers");
        assert_eq!(referrers.len(), 1, "{p}: one provenance referrer");
    }
    skopeo_reads(&f.store, "test.local/multi:1", index.raw());

    // Another store, another time, the same base (the fixture's own
    // records its temporary path): the same index.
    let Some(g) = fixture() else { return };
    let ours = image_store::resolve_reference(&f.store, BASE).expect("base");
    image_store::copy_image(&f.store, &g.store, &ours).expect("copy the base");
    image_store::TagStore::set_tag(&g.store, BASE, &ours).expect("tag the base");
    two_platform_base(&g, base);
    cross_context(&g);
    let (again, _) = g.build(&cross_compile(base), cross_options);
    let again = again.expect("second build");
    assert_eq!(again.index.expect("index").digest(), index.digest());
}

/// `skopeo inspect --raw` of `name` in the store gives `raw`.
fn skopeo_reads(store: &OciDir, name: &str, raw: &[u8]) {
    if !image_testsupport::tools::have("skopeo") {
        image_testsupport::tools::skip_or_fail("skopeo");
        return;
    }
    let name = image_store::tags::normalize_name(name).expect("name");
    let src = format!("oci:{}:{name}", store.root().display());
    let out = image_testsupport::process::run_checked(120, "skopeo", &["inspect", "--raw", &src]);
    assert_eq!(out.stdout, raw, "skopeo reads the index as stored");
}

/// A `--no-cache` multi-platform build still builds the shared stage once
/// (the second platform reuses what the first made in this build), and a
/// single-platform build for a foreign platform gives that platform's
/// image, not an index.
#[test]
fn no_cache_shares_the_build_stage_and_one_platform_makes_one_manifest() {
    let Some(f) = fixture() else { return };
    let base = "test.local/base:multi";
    two_platform_base(&f, base);
    cross_context(&f);
    let (r, events) = f.build(&cross_compile(base), |o| {
        cross_options(o);
        o.no_cache = true;
    });
    r.expect("build");
    let ran = runs_executed(&events);
    assert_eq!(ran.len(), 3, "one shared RUN, one per platform: {ran:?}");
    // The shared stage's COPY --link (keyed by its stage's platform, not
    // the target's) is made once too.
    let links = steps_made(&events, "COPY --link");
    assert_eq!(links, 1, "{events:?}");
    let foreign = foreign_platform();
    let (r, _) = f.build(&cross_compile(base), |o| {
        o.platforms = vec![foreign.clone()];
        o.tags = vec!["test.local/one:1".into()];
    });
    let r: BuildResult = r.expect("one platform");
    assert!(r.index.is_none());
    let config = r.config.file();
    assert_eq!(config.architecture, foreign.architecture);
    let tagged = image_store::resolve_reference(&f.store, "test.local/one:1").expect("tag");
    assert_eq!(tagged.digest().to_string(), r.manifest.digest().to_string());
}

/// A build stage on the build platform whose RUN (keyed by the target's
/// arch, so it runs once per platform) starts with `script`, in a shell
/// where `$TARGETARCH` is the platform's, `/rv` a cache mount the
/// platforms share and `$HOST`, `$FOREIGN` the two archs; the final stage
/// copies what it wrote.
fn rendezvous(script: &str) -> String {
    format!(
        "FROM --platform=$BUILDPLATFORM {BASE} AS build\n\
         ARG TARGETARCH\n\
         ENV HOST={host} FOREIGN={foreign}\n\
         RUN --mount=type=cache,target=/rv,id=rendezvous {script} && echo $TARGETARCH > /arch\n\
         FROM scratch\n\
         COPY --from=build /arch /arch\n",
        host = Platform::host().architecture,
        foreign = foreign_platform().architecture,
    )
}

/// Builds the [`rendezvous`] of `script` for the host's platform and the
/// foreign one, two stages at once at most, tagged `tag`.
fn build_both(
    f: &Fixture,
    script: &str,
    tag: &str,
) -> (Result<BuildResult, BuildError>, Vec<BuildEvent>) {
    f.build(&rendezvous(script), |o| {
        o.platforms = vec![Platform::host(), foreign_platform()];
        o.tags = vec![tag.into()];
        o.jobs = 2;
    })
}

/// The wait of a rendezvous script: until `/rv/$1` exists, at most 30 s
/// (then it fails with 7).
const WAIT: &str =
    "i=0; while ! test -e /rv/$1; do i=$((i+1)); test $i -le 300 || exit 7; sleep 0.1; done";

/// The platforms build at once: each platform's RUN marks itself in a
/// cache mount both share and waits (at most 30 s) for the other's mark,
/// so the build succeeds only if both run at the same time (one after the
/// other, the first waits in vain and fails).
#[test]
fn the_platforms_build_at_once() {
    let Some(f) = fixture() else { return };
    let script = format!(
        "sh -c 'touch /rv/$TARGETARCH; {WAIT}' wait $(test $TARGETARCH = $HOST && echo $FOREIGN || echo $HOST)"
    );
    let (r, events) = build_both(&f, &script, "test.local/at-once:1");
    let built = r.expect("each platform's RUN met the other's");
    assert_eq!(built.images.len(), 2);
    assert_eq!(runs_executed(&events).len(), 2, "{events:?}");
    assert!(image_store::resolve_image(&f.store, "test.local/at-once:1", None).is_ok());
}

/// A platform's failure stops the others at once: the host's RUN fails
/// once the foreign platform's has started; that one, which would sleep
/// for two minutes, is killed (its step never done), the error is the
/// failed RUN's, and nothing is tagged.
#[test]
fn a_failing_platform_stops_the_others_and_nothing_is_tagged() {
    let Some(f) = fixture() else { return };
    let script = format!(
        "sh -c 'if test $TARGETARCH = $HOST; then {WAIT}; exit 3; else touch /rv/$TARGETARCH; sleep 120; fi' wait $FOREIGN"
    );
    let (r, events) = build_both(&f, &script, "test.local/stopped:1");
    let e = r.expect_err("the host's RUN fails");
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(&e, BuildError::Step { source: StepError::Run(run), .. }
            if matches!(**run, image_build::run::RunError::Failed { code: 3, .. })),
        "{e:?}"
    );
    let foreign_run = events.iter().find_map(|e| match e {
        BuildEvent::StepStarted {
            step, stage, text, ..
        } if text.starts_with("RUN ") && stage.starts_with(&foreign_platform().to_string()) => {
            Some(*step)
        }
        _ => None,
    });
    let foreign_run = foreign_run.expect("the foreign platform's RUN started");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, BuildEvent::StepDone { step, .. } if *step == foreign_run)),
        "the foreign platform's RUN was stopped: {events:?}"
    );
    assert!(image_store::resolve_image(&f.store, "test.local/stopped:1", None).is_err());
}

/// A step the platforms share (a `$BUILDPLATFORM` stage: one cache key)
/// that fails runs once: the platform waiting for it stops, cancelled,
/// instead of finding no layer and running the failed step itself. The
/// step counts its runs in a cache mount (and lasts long enough for the
/// other platform to wait for it); a second build reads the count back
/// as its RUN's exit code. The build reports the step's failure, not the
/// waiter's cancellation.
///
/// The window this guards is the moment between the failed claim letting
/// the key go and the scheduler setting the interrupt: here too short to
/// be seen (with the claim's mend reverted this still passed; it failed,
/// count 2, only with the scheduler's reaction also delayed by hand), so
/// the mend's own tests are the claim's unit test in `build/layer.rs`
/// (`a_failed_claim_stops_its_waiter_and_a_succeeded_one_lets_it_go`) and
/// the error kept, `build/mod.rs`'s
/// `a_failure_is_kept_over_a_cancellation_that_came_first`.
#[test]
fn a_failing_shared_step_runs_once() {
    let Some(f) = fixture() else { return };
    let shared = format!(
        "FROM --platform=$BUILDPLATFORM {BASE} AS build\n\
         RUN --mount=type=cache,target=/rv,id=runs-once sh -c 'echo ran >> /rv/runs; sleep 3; exit 3'\n\
         FROM scratch\n\
         COPY --from=build /bin/busybox /busybox\n"
    );
    let (r, _) = f.build(&shared, |o| {
        o.platforms = vec![Platform::host(), foreign_platform()];
        o.tags = vec!["test.local/runs-once:1".into()];
        o.jobs = 2;
        o.no_cache = true;
    });
    let e = r.expect_err("the shared RUN fails");
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(&e, BuildError::Step { source: StepError::Run(run), .. }
            if matches!(**run, image_build::run::RunError::Failed { code: 3, .. })),
        "{e:?}"
    );
    let count = format!(
        "FROM {BASE}\n\
         RUN --mount=type=cache,target=/rv,id=runs-once sh -c 'exit $(wc -l < /rv/runs)'\n"
    );
    let (r, _) = f.build(&count, |o| o.no_cache = true);
    let e = r.expect_err("the count is the exit code");
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(&e, BuildError::Step { source: StepError::Run(run), .. }
            if matches!(**run, image_build::run::RunError::Failed { code: 1, .. })),
        "the shared step ran more than once: {e:?}"
    );
    assert!(image_store::resolve_image(&f.store, "test.local/runs-once:1", None).is_err());
}
