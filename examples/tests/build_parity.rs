//! Build parity with buildah: every Dockerfile of the corpus
//! (`tests/parity/`, see `parity_support::Case` for its layout) built by
//! `buildah build` (Debian's, on a private storage below a temporary
//! directory) and by `imagectl build`, from the same base images, gives
//! the same root filesystem, the same run-time config, the same number of
//! layers and the same `empty_layer` pattern in the history
//! (`parity_support::image::differences` says exactly what is compared and
//! what is forgiven, and why).
//!
//! The comparison has tests of its own, so that an empty list of
//! differences means something: the layer applier on hand-made layers,
//! two buildah builds of one case that are the same, and two different
//! Dockerfiles reported line by line. Missing tools or root: a loud skip,
//! a failure under CI=true.

mod common;
mod parity_support;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Cleanup, Cli};
use image_testsupport::tar::TarBuf;
use image_testsupport::tools::{ready, skip_or_fail};
use parity_support::image::{differences, Facts, Kind, Tree};
use parity_support::{corpus, Builders, Case};

/// The tools the builds need besides root and busybox-static.
const TOOLS: &[&str] = &["buildah", "skopeo"];

/// Whether `imagectl build` exists yet (it is being written while the
/// corpus is); a loud skip, or a failure under CI, when not.
fn imagectl_builds(cli: &Cli) -> bool {
    let help = cli.imagectl(&["build", "--help"]);
    if !help.status.success() {
        skip_or_fail("`imagectl build` (not in this imagectl yet)");
    }
    help.status.success()
}

fn layer(build: impl FnOnce(&mut TarBuf) -> &mut TarBuf) -> Vec<u8> {
    build(&mut TarBuf::new()).end()
}

#[test]
fn the_layer_applier_follows_whiteouts_opaque_directories_and_hard_links() {
    let mut tree = Tree::default();
    tree.apply_layer(
        layer(|t| {
            t.dir("a")
                .file("a/x", b"x")
                .file("a/y", b"y")
                .dir("b")
                .file("b/keep", b"k")
                .file("gone", b"g")
                .symlink("s", "a/x")
        })
        .as_slice(),
    );
    tree.apply_layer(
        layer(|t| {
            t.file("b/.wh..wh..opq", b"")
                .file("b/new", b"n")
                .file(".wh.gone", b"")
                .file("a/.wh.y", b"")
                .hardlink("a/x-again", "a/x")
                .file("./c/implicit", b"i")
        })
        .as_slice(),
    );
    let paths: Vec<&str> = tree.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "a",
            "a/x",
            "a/x-again",
            "b",
            "b/new",
            "c",
            "c/implicit",
            "s"
        ]
    );
    assert_eq!(tree.get("s").expect("s").kind, Kind::Symlink("a/x".into()));
    let groups: BTreeSet<BTreeSet<String>> =
        [["a/x".to_owned(), "a/x-again".to_owned()].into()].into();
    assert_eq!(tree.hardlink_groups(), groups);
    // A file over a directory replaces it with everything below.
    tree.apply_layer(layer(|t| t.file("a", b"now a file")).as_slice());
    assert!(tree.get("a/x").is_none() && tree.hardlink_groups().is_empty());
}

#[test]
fn runtime_stubs_are_forgiven_only_when_empty_and_not_in_the_base() {
    let base = {
        let mut t = Tree::default();
        t.apply_layer(layer(|t| t.dir("etc").file("etc/hosts", b"")).as_slice());
        t
    };
    let mut built = base.clone();
    built.apply_layer(
        layer(|t| {
            t.dir("proc")
                .dir("sys")
                .file("sys/not-a-stub", b"")
                .file("etc/hostname", b"")
                .file("etc/resolv.conf", b"nameserver 10.0.0.1\n")
                .file("etc/hosts", b"")
        })
        .as_slice(),
    );
    built.drop_runtime_stubs(&base);
    let paths: Vec<&str> = built.iter().map(|(p, _)| p.as_str()).collect();
    // proc and etc/hostname go; sys has content, resolv.conf has content,
    // etc/hosts was in the base: they stay.
    assert_eq!(
        paths,
        [
            "etc",
            "etc/hosts",
            "etc/resolv.conf",
            "sys",
            "sys/not-a-stub"
        ]
    );
}

#[test]
fn the_corpus_covers_every_instruction_and_feature() {
    let cases = corpus();
    assert!(cases.len() >= 25, "{} cases", cases.len());
    let mut keywords = BTreeSet::new();
    let mut multi_stage = 0;
    for case in &cases {
        let text = std::fs::read_to_string(case.dir.join("Dockerfile")).expect("read");
        let parsed = image_build::dockerfile::parse("Dockerfile", &text)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        keywords.extend(parsed.commands().iter().map(|c| c.keyword()));
        multi_stage += usize::from(parsed.stages.len() > 1);
    }
    // Every instruction the parser knows (`Command::keyword`).
    let all = "FROM RUN CMD ENTRYPOINT COPY ADD ENV ARG LABEL EXPOSE USER WORKDIR VOLUME SHELL \
               STOPSIGNAL HEALTHCHECK ONBUILD MAINTAINER";
    let missing: Vec<&str> = all
        .split_whitespace()
        .filter(|k| !keywords.contains(k))
        .collect();
    assert!(missing.is_empty(), "no case uses {missing:?}");
    assert!(multi_stage >= 4, "{multi_stage} multi-stage cases");
    let has = |what: &str, f: &dyn Fn(&Case) -> bool| {
        assert!(cases.iter().any(f), "no case with {what}");
    };
    let dockerfile = |c: &Case| std::fs::read_to_string(c.dir.join("Dockerfile")).expect("read");
    has(".dockerignore", &|c| c.dir.join(".dockerignore").is_file());
    has("a heredoc", &|c| dockerfile(c).contains("<<EOT"));
    has("ADD of an archive", &|c| {
        dockerfile(c).contains("ADD tree.tar.gz")
    });
    has("RUN rm (whiteouts)", &|c| dockerfile(c).contains("RUN rm "));
    has("an opaque directory", &|c| {
        dockerfile(c).contains("rm -rf /usr/share/parity && mkdir")
    });
    has("a Debian base", &|c| c.debian);
    has("build args", &|c| !c.build_args.is_empty());
    has("--target", &|c| c.target.is_some());
    has("an ONBUILD child", &|c| {
        cases.iter().any(|p| {
            p.tags
                .iter()
                .any(|t| dockerfile(c).contains(&format!("FROM {t}")))
        })
    });
}

/// A case in a temporary directory from a Dockerfile's text.
fn inline_case(dir: &Path, name: &str, dockerfile: &str) -> Case {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::write(d.join("Dockerfile"), dockerfile).expect("write");
    Case::read(&d)
}

#[test]
fn two_buildah_builds_of_a_case_are_the_same() {
    if !ready(TOOLS) {
        return;
    }
    let b = Builders::new(Cli::new(Cleanup::Mounts));
    for name in [
        "add-archives",
        "run-file-kinds",
        "run-whiteouts",
        "multistage-copy-from",
    ] {
        let case = corpus()
            .into_iter()
            .find(|c| c.name == name)
            .expect("in the corpus");
        let first = b.buildah(&case).expect("buildah");
        let again = b
            .buildah_as(&case, &format!("{}-again", case.tag()), &["--no-cache"])
            .expect("buildah again");
        let base = b.base_facts(&case);
        let diff = differences("first", &first, "again", &again, &base.tree);
        assert!(diff.is_empty(), "{name}: {diff:#?}");
    }
}

#[test]
fn two_different_dockerfiles_are_reported_line_by_line() {
    if !ready(TOOLS) {
        return;
    }
    let b = Builders::new(Cli::new(Cleanup::Mounts));
    let dir = b.cli.tmp.path().join("inline");
    let one = inline_case(
        &dir,
        "one",
        "FROM parity-busybox\nENV X=1\nRUN echo a > /f && ln /f /f2\nCMD [\"sh\"]\n",
    );
    let two = inline_case(
        &dir,
        "two",
        "FROM parity-busybox\nENV X=2\nRUN echo b > /f && mkdir -m 0700 /only && cp /f /f2\nLABEL l=1\nCMD [\"true\"]\n",
    );
    let (a, c) = (b.buildah(&one).expect("one"), b.buildah(&two).expect("two"));
    let base: Facts = b.base_facts(&one);
    let diff = differences("one", &a, "two", &c, &base.tree);
    let text = diff.join("\n");
    for expected in [
        "history empty_layer: one LELE, two LELEE",
        "config Env: one [\"PATH=",
        "config Cmd: one [\"sh\"], two [\"true\"]",
        "config Labels: one null, two {\"l\":\"1\"}",
        "/f: one file 2 bytes",
        "/f2: one file 2 bytes",
        "/only: only two's: dir 0700 0:0",
        "hard-link groups: one {{\"f\", \"f2\"}}, two {}",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    assert_eq!(diff.len(), 8, "{text}");
}

#[test]
fn buildah_and_imagectl_build_the_same_images() {
    if !ready(TOOLS) {
        return;
    }
    let mut b = Builders::new(Cli::new(Cleanup::Mounts));
    // Without `imagectl build`, buildah alone builds the corpus: every
    // case must still be buildable.
    let with_ours = imagectl_builds(&b.cli);
    let mut report = Vec::new();
    for case in corpus() {
        if case.debian {
            if let Err(why) = b.debian() {
                skip_or_fail(&format!("the Debian base of case {}: {why}", case.name));
                continue;
            }
        }
        eprintln!("parity: {}", case.name);
        let theirs = b.buildah(&case);
        if !with_ours {
            if let Err(e) = theirs {
                report.push(format!("{}: buildah fails: {e}", case.name));
            }
            continue;
        }
        match (theirs, b.ours(&case)) {
            (Ok(theirs), Ok(ours)) => {
                let base = b.base_facts(&case);
                let found = differences("buildah", &theirs, "ours", &ours, &base.tree);
                let expected: Vec<String> = std::fs::read_to_string(case.dir.join("differences"))
                    .map(|t| {
                        t.lines()
                            .filter(|l| !l.starts_with('#'))
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                if found == expected {
                    continue;
                }
                for d in &found {
                    eprintln!("parity: {}: {d}", case.name);
                    report.push(format!("{}: {d}", case.name));
                }
                if !expected.is_empty() {
                    report.push(format!(
                        "{}: expected exactly these differences instead:\n{}",
                        case.name,
                        expected.join("\n")
                    ));
                }
            }
            (Err(e), Ok(_)) => report.push(format!("{}: only buildah fails: {e}", case.name)),
            (Ok(_), Err(e)) => report.push(format!("{}: only ours fails: {e}", case.name)),
            (Err(t), Err(o)) => {
                report.push(format!(
                    "{}: both fail:\nbuildah: {t}\nours: {o}",
                    case.name
                ));
            }
        }
    }
    assert!(
        report.is_empty(),
        "{} differences:\n{}",
        report.len(),
        report.join("\n")
    );
}
