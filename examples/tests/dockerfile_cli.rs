//! `imagectl dockerfile`: the JSON form of a Dockerfile's instructions
//! (docs/dockerfile-json.md), held to golden outputs for Dockerfiles of
//! image-build's corpus and of its own, and checked against image-build's
//! parse over the whole corpus. `BLESS=1` writes the golden files (review
//! the diff before committing).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use image_core::Platform;
use image_testsupport::process::TIMEOUT;

/// image-build's corpus of Dockerfiles, each with its expected parse.
fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../image-build/tests/dockerfiles")
}

/// This test's own Dockerfiles and golden outputs.
fn goldens() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dockerfile_cli")
}

/// `imagectl dockerfile -f Dockerfile args` in a directory holding a copy
/// of `source` as `Dockerfile` (so the output names the file alike
/// wherever the test runs); returns stdout, stderr and success.
fn dockerfile(source: &Path, args: &[&str]) -> (String, String, bool) {
    dockerfile_text(&std::fs::read_to_string(source).unwrap(), args)
}

/// [`dockerfile`] of the text of a Dockerfile, killed after
/// image-testsupport's bound on a process (through timeout(1): its output
/// can be larger than a pipe holds, so it is read while imagectl runs).
fn dockerfile_text(text: &str, args: &[&str]) -> (String, String, bool) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), text).unwrap();
    let out = Command::new("timeout")
        .args(["-k", "5", &TIMEOUT.as_secs().to_string()])
        .arg(env!("CARGO_BIN_EXE_imagectl"))
        .current_dir(dir.path())
        .args(["dockerfile", "-f", "Dockerfile"])
        .args(args)
        .env_remove("GREETING")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // timeout(1) exits 124 when it had to stop imagectl.
    assert_ne!(
        out.status.code(),
        Some(124),
        "imagectl dockerfile {args:?} timed out"
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.success(),
    )
}

/// The output with the host's platform, the one line that differs from
/// machine to machine, replaced by `<host>`.
fn portable(out: &str) -> String {
    let host = format!("  \"platform\": \"{}\",\n", Platform::host());
    assert!(out.contains(&host), "no host platform line in {out}");
    out.replacen(&host, "  \"platform\": \"<host>\",\n", 1)
}

/// Compares with the golden file `name`, or writes it under `BLESS=1`.
fn assert_golden(name: &str, got: &str) {
    let path = goldens().join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("no golden {name}; BLESS=1 writes it:\n{got}"));
    assert_eq!(got, want, "{name}");
}

#[test]
fn golden_outputs() {
    let cases: &[(PathBuf, &[&str], &str)] = &[
        (
            corpus().join("005-global-args.Dockerfile"),
            &[],
            "005-global-args.json",
        ),
        (
            corpus().join("005-global-args.Dockerfile"),
            &["--expand", "--build-arg", "TAG=3.20", "--build-arg", "A=x"],
            "005-global-args.expand.json",
        ),
        (
            corpus().join("006-multistage.Dockerfile"),
            &["--target", "ONE"],
            "006-multistage.target-one.json",
        ),
        (
            corpus().join("019-env-forms.Dockerfile"),
            &["--expand"],
            "019-env-forms.expand.json",
        ),
        (
            corpus().join("024-workdir.Dockerfile"),
            &["--expand"],
            "024-workdir.expand.json",
        ),
        (
            corpus().join("045-heredoc-run.Dockerfile"),
            &["--expand"],
            "045-heredoc-run.expand.json",
        ),
        (
            corpus().join("062-from-stage-index.Dockerfile"),
            &[],
            "062-from-stage-index.json",
        ),
        (goldens().join("targets.Dockerfile"), &[], "targets.json"),
        (
            goldens().join("targets.Dockerfile"),
            &[
                "--expand",
                "--build-arg",
                "GREETING=hi",
                "--build-arg",
                "GREETING",
            ],
            "targets.expand.json",
        ),
        (
            goldens().join("targets.Dockerfile"),
            &["--expand", "--target", "build"],
            "targets.expand.build.json",
        ),
    ];
    for (source, args, golden) in cases {
        let (out, err, ok) = dockerfile(source, args);
        assert!(ok, "{golden}: {err}");
        assert_golden(golden, &portable(&out));
    }
}

/// Over the whole corpus, each instruction's `command` is image-build's
/// parse of it, with its line, in order; the stages are the parse's.
#[test]
fn commands_are_the_parse_for_the_whole_corpus() {
    let mut checked = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .collect();
    files.sort();
    for path in files {
        let Ok(parse) = std::fs::read_to_string(path.with_extension("json")) else {
            continue; // a negative case: see fails_as_the_parser_does
        };
        let parse: serde_json::Value = serde_json::from_str(&parse).unwrap();
        let (out, err, ok) = dockerfile(&path, &[]);
        assert!(ok, "{}: {err}", path.display());
        let out: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out["version"], 1);
        assert_eq!(out["directives"], parse["directives"], "{}", path.display());
        let steps = |v: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value)> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|i| (i["command"].clone(), i["pos"]["line"].clone()))
                .collect()
        };
        let ours = |v: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value)> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    let keyword = i["keyword"].as_str().unwrap();
                    assert!(i["command"].get(keyword).is_some(), "{i}");
                    (i["command"].clone(), i["line"].clone())
                })
                .collect()
        };
        assert_eq!(ours(&out["global_args"]), steps(&parse["global_args"]));
        let (got, want) = (
            out["stages"].as_array().unwrap(),
            parse["stages"].as_array().unwrap(),
        );
        assert_eq!(got.len(), want.len(), "{}", path.display());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g["index"], w["index"]);
            assert_eq!(g["name"], w["from"]["alias"]);
            assert_eq!(g["from"], w["from"]["image"]);
            assert_eq!(g["platform"], w["from"]["platform"]);
            assert_eq!(g["line"], w["pos"]["line"]);
            assert_eq!(
                ours(&g["instructions"]),
                steps(&w["instructions"]),
                "{}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 60, "{checked} Dockerfiles checked");
}

/// A Dockerfile the parser refuses fails with the parser's message and
/// class, and prints nothing on stdout.
#[test]
fn fails_as_the_parser_does() {
    for name in [
        "101-err-unknown-flag",
        "110-err-dup-stage",
        "114-err-heredoc-unterminated",
    ] {
        let (out, err, ok) = dockerfile(&corpus().join(format!("{name}.Dockerfile")), &[]);
        assert!(!ok && out.is_empty(), "{name}: {out}");
        let want = std::fs::read_to_string(corpus().join(format!("{name}.err"))).unwrap();
        let want = want.replacen(&format!("{name}.Dockerfile"), "Dockerfile", 1);
        assert_eq!(err, format!("imagectl: invalid input: {want}"), "{name}");
    }
}

#[test]
fn refuses_an_unknown_target_and_a_nameless_build_arg() {
    let df = goldens().join("targets.Dockerfile");
    let (_, err, ok) = dockerfile(&df, &["--target", "nope"]);
    assert!(!ok);
    assert_eq!(
        err,
        "imagectl: --target nope: no stage of Dockerfile has that name\n"
    );
    let (_, err, ok) = dockerfile(&df, &["--build-arg", "=x"]);
    assert!(!ok);
    assert_eq!(err, "imagectl: --build-arg \"=x\": expected NAME=VALUE\n");
}

/// `-f -` reads standard input; an input past the parser's size limit is
/// refused with the parser's error, after reading no more than the limit.
#[test]
fn reads_standard_input_and_bounds_it() {
    let run = |input: Vec<u8>| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imagectl"))
            .args(["dockerfile", "-f", "-", "--expand"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // The writer may see the pipe closed early: imagectl stops reading at the limit.
        let writer = std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    };
    let out = run(b"FROM busybox\nENV A=1\nRUN echo $A\n".to_vec());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["file"], "-");
    assert_eq!(
        v["stages"][0]["instructions"][0]["expanded"]["ENV"][0]["value"],
        "1"
    );

    // Twice the limit, and not UTF-8 past it: the size is what is reported.
    let limit = image_build::dockerfile::MAX_BYTES;
    let mut big = b"FROM busybox\n".to_vec();
    big.resize(limit, b'#');
    big.extend(std::iter::repeat_n(0xff, limit));
    let out = run(big);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("imagectl: invalid input: -:"), "{err}");
    assert!(err.contains(&limit.to_string()), "{err}");
}

/// The demo's example project (examples/project) is what the README says:
/// two stages, both on the busybox-static base, the final one taking the
/// build stage's output with `COPY --from` and setting ENV, USER,
/// HEALTHCHECK and CMD; every instruction expands.
#[test]
fn the_example_project_is_a_multi_stage_build_on_the_busybox_base() {
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("project");
    let (out, err, ok) = dockerfile(&project.join("Dockerfile"), &["--expand"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    for s in stages {
        assert_eq!(s["from"], "demo/busybox:latest");
        assert_eq!(s["needed"], true);
    }
    let keywords = |s: &serde_json::Value| -> Vec<String> {
        s["instructions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["keyword"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(keywords(&stages[0]).contains(&"RUN".to_owned()));
    let last = keywords(&stages[1]);
    for k in ["ENV", "COPY", "USER", "HEALTHCHECK", "CMD"] {
        assert!(last.contains(&k.to_owned()), "no {k} in {last:?}");
    }
    let from_build = stages[1]["instructions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["expanded"]["COPY"]["from"] == "build");
    assert!(from_build, "no COPY --from=build");
    // Every file the Dockerfile copies is in the project.
    for f in [
        "data/inventory.csv",
        "data/orders.csv",
        "scripts/report.sh",
        "scripts/show.sh",
    ] {
        assert!(project.join(f).is_file(), "{f}");
    }
}

/// `imagectl build --print CONTEXT` prints what `imagectl dockerfile
/// --expand` prints for the context's Dockerfile, and builds nothing (no
/// store is made).
#[test]
fn build_print_is_the_expanded_json_and_builds_nothing() {
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("project");
    let (expected, err, ok) = dockerfile(&project.join("Dockerfile"), &["--expand"]);
    assert!(ok, "{err}");
    let store = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .args(["-k", "5", &TIMEOUT.as_secs().to_string()])
        .arg(env!("CARGO_BIN_EXE_imagectl"))
        .arg("--store")
        .arg(store.path().join("store"))
        .args(["build", "--print"])
        .arg(&project)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want: serde_json::Value = serde_json::from_str(&expected).unwrap();
    // The file name differs (a path here, `Dockerfile` there); the rest is one form.
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("file");
        v
    };
    assert_eq!(strip(got), strip(want));
    assert!(!store.path().join("store").exists(), "--print made a store");
}

/// A Dockerfile of `n` stages `s0`.. each FROM the one before, each
/// stage's instructions `body(i)`.
fn chain(n: usize, body: impl Fn(usize) -> String) -> String {
    let mut text = String::from("FROM busybox AS s0\n");
    for i in 1..n {
        text.push_str(&format!("FROM s{} AS s{i}\n{}", i - 1, body(i)));
    }
    text
}

/// The stages a name names are looked up in a map, once each: a chain of
/// 90000 stages, each FROM the one before, is linear work (the lookup by a
/// scan of the earlier stages took about a minute for half as many in a
/// release build, and runs past the bound of a test process here).
#[test]
fn a_long_chain_of_stages_is_linear_work() {
    let n = 90_000;
    let (out, err, ok) = dockerfile_text(&chain(n, |_| String::new()), &["--expand"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), n);
    assert!(stages.iter().all(|s| s["needed"] == true));
    assert_eq!(stages[n - 1]["base_stage"], n - 2);
}

/// A stage's ENV goes to its one heir without a copy: a chain of stages
/// each adding an ENV carries every variable to the end in linear work (a
/// copy per stage would hold about 4.5e8 entries at once).
#[test]
fn a_chain_of_stages_hands_its_env_down_without_copies() {
    let n = 30_000;
    let mut text = chain(n, |i| format!("ENV V{i}={i}\n"));
    text.push_str("FROM s29999\nLABEL first=$V1 last=$V29999\n");
    let (out, err, ok) = dockerfile_text(&text, &["--expand"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let last = &v["stages"][n]["instructions"][0]["expanded"]["LABEL"];
    assert_eq!(last[0]["value"], "1");
    assert_eq!(last[1]["value"], "29999");
}

/// Many stages on one stage with a large ENV each start from a copy of
/// it: the copies are bounded in all, and past the bound the Dockerfile is
/// refused with a message that says so.
#[test]
fn copies_of_inherited_env_are_bounded() {
    let pairs: Vec<String> = (0..2000).map(|i| format!("K{i}=v")).collect();
    let mut text = format!("FROM busybox AS big\nENV {}\n", pairs.join(" "));
    for _ in 0..600 {
        text.push_str("FROM big\nRUN true\n");
    }
    let (out, err, ok) = dockerfile_text(&text, &["--expand"]);
    assert!(!ok && out.is_empty(), "{out}");
    assert_eq!(
        err,
        format!(
            "imagectl: Dockerfile: the stages built on other stages inherit more than {} \
             ENV entries in all\n",
            1 << 20
        )
    );
    // Without --expand nothing is inherited.
    let (_, err, ok) = dockerfile_text(&text, &[]);
    assert!(ok, "{err}");
}

/// A few bytes may expand to a megabyte (image-build's bound on one
/// instruction); the expanded forms of a whole Dockerfile are bounded in
/// all, so a small file cannot make imagectl hold or print gigabytes.
#[test]
fn the_expanded_forms_are_bounded_in_all() {
    let mut text = format!(
        "FROM busybox\nENV A={}\nENV B={}\n",
        "x".repeat(1000),
        "$A".repeat(1000)
    );
    for _ in 0..100 {
        text.push_str("LABEL x=$B\n");
    }
    let (out, err, ok) = dockerfile_text(&text, &["--expand"]);
    assert!(!ok && out.is_empty(), "{} bytes out", out.len());
    assert_eq!(
        err,
        format!(
            "imagectl: Dockerfile: the expanded instructions take more than {} bytes\n",
            64 << 20
        )
    );
    // As parsed, the file is small.
    let (out, err, ok) = dockerfile_text(&text, &[]);
    assert!(ok, "{err}");
    assert!(out.len() < 100_000, "{}", out.len());
}
