//! `imagectl build` end to end, as root, on a base image appended in the
//! test from a busybox-static root filesystem: the plain progress lines,
//! tags, `--iidfile`, `--output` archives, a Dockerfile from standard input.
//! A missing tool or privilege skips the test loudly unless CI=true.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{container_rootfs, ready, Cleanup, Cli};

const BASE: &str = "test.local/build-base:1";
const APPLETS: &[&str] = &["sh", "echo", "cat", "ls", "mkdir", "test"];

fn base(cli: &Cli) {
    let rootfs = cli.tmp.path().join("rootfs");
    container_rootfs(&rootfs, APPLETS);
    cli.append_shell_image(&rootfs, BASE);
}

/// Runs `imagectl args` with `stdin` as its standard input; returns the
/// output whatever its status.
fn with_stdin(cli: &Cli, args: &[&str], stdin: &str) -> std::process::Output {
    let mut cmd = cli.command(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn imagectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

#[test]
fn build_shows_plain_progress_tags_and_writes_what_is_asked() {
    if !ready(&[]) {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    base(&cli);
    let ctx = cli.tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {BASE} AS app\nENV GREETING=hello\nLABEL a=b\nCMD [\"sh\"]\n"),
    )
    .unwrap();
    let iid = cli.tmp.path().join("iid");
    let archive = cli.tmp.path().join("out.tar");
    let out = cli.imagectl(&[
        "build",
        "-t",
        "test.local/built:1",
        "-t",
        "test.local/built:2",
        "--label",
        "from=cli",
        "--iidfile",
        iid.to_str().unwrap(),
        "--output",
        &format!("type=oci,dest={}", archive.display()),
        ctx.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.trim();
    assert!(id.starts_with("sha256:"), "{stdout}");
    assert!(
        stderr.contains(&format!("#1 [app 1/1] FROM {BASE}\n")),
        "{stderr}"
    );
    assert!(stderr.contains("#1 DONE "), "{stderr}");
    assert!(stderr.contains(&format!("Built {id}")), "{stderr}");
    assert!(stderr.contains("Tagged test.local/built:2"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id);
    // Both tags name the image; the label is on it.
    for t in ["test.local/built:1", "test.local/built:2"] {
        let inspect = cli.ok(&["inspect", t]);
        assert!(
            inspect.contains(id.trim_start_matches("sha256:")),
            "{inspect}"
        );
        assert!(inspect.contains("\"from\""), "{inspect}");
    }
    // The archive is an OCI archive the store loads back.
    let loaded = Cli::new(Cleanup::Mounts);
    loaded.ok(&["load", archive.to_str().unwrap()]);
    let images = loaded.ok(&["images"]);
    assert!(images.contains("test.local/built"), "{images}");

    // A Dockerfile from standard input, with no context; quiet progress.
    let out = with_stdin(
        &cli,
        &[
            "build",
            "--progress",
            "quiet",
            "-t",
            "test.local/stdin:1",
            "-",
        ],
        &format!("FROM {BASE}\nENV FROM_STDIN=1\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect = cli.ok(&["inspect", "test.local/stdin:1"]);
    assert!(inspect.contains("FROM_STDIN=1"), "{inspect}");
    // Built again a second later: the same image, as the steps that make
    // no layer take their time from the base, not from the clock.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = with_stdin(
        &cli,
        &["build", "--progress", "quiet", "-"],
        &format!("FROM {BASE}\nENV FROM_STDIN=1\n"),
    );
    assert!(again.status.success());
    assert!(out.stdout.starts_with(b"sha256:"), "no image ID printed");
    assert_eq!(again.stdout, out.stdout, "a rebuild made another image");

    // RUN and COPY: their output, and CACHED on a rebuild.
    std::fs::write(ctx.join("file.txt"), "from the context\n").unwrap();
    let dockerfile = cli.tmp.path().join("Dockerfile.run");
    std::fs::write(
        &dockerfile,
        format!("FROM {BASE}\nCOPY file.txt /file.txt\nRUN cat /file.txt\n"),
    )
    .unwrap();
    let args = [
        "build",
        "-f",
        dockerfile.to_str().unwrap(),
        "-t",
        "test.local/run:1",
        ctx.to_str().unwrap(),
    ];
    let out = cli.imagectl(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("#2 [2/3] COPY file.txt /file.txt\n"),
        "{stderr}"
    );
    assert!(stderr.contains("#3 [3/3] RUN cat /file.txt\n"), "{stderr}");
    let output = stderr
        .lines()
        .find(|l| l.starts_with("#3 ") && l.ends_with(" from the context"));
    assert!(output.is_some(), "{stderr}");
    assert!(stderr.contains(": 2 steps, 0 cached"), "{stderr}");
    let first = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let blobs = || {
        std::fs::read_dir(cli.store().join("blobs/sha256"))
            .unwrap()
            .count()
    };
    let before = blobs();
    // A second later, so that a time taken from the clock would differ.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = cli.imagectl(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("#2 CACHED\n") && stderr.contains("#3 CACHED\n"),
        "{stderr}"
    );
    assert!(stderr.contains(": 2 steps, 2 cached"), "{stderr}");
    // Without SOURCE_DATE_EPOCH too, the cached rebuild is the same image
    // (its times are the first build's) and writes no new blob.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), first);
    assert_eq!(blobs(), before, "a cached rebuild wrote blobs");

    // A failing RUN: its code, its last lines, its line.
    let out = with_stdin(
        &cli,
        &["build", "--progress", "quiet", "-"],
        &format!("FROM {BASE}\nRUN echo last words; exit 7\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("> last words\n"), "{stderr}");
    assert!(
        stderr.contains("Dockerfile:2: RUN: running the command: the command exited with code 7"),
        "{stderr}"
    );

    // A failing build names the line, and exits 1.
    let out = with_stdin(&cli, &["build", "-"], "FROM test.local/absent:1\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Dockerfile:1: FROM: base image test.local/absent:1"),
        "{stderr}"
    );
}

/// `--jobs` and `--source-date-epoch`: two stages built at once and then
/// one by one, seconds apart and with no cache, give the same image when
/// the epoch is given; each output line names its step (`#N`), so the
/// lines of the stages built at once stay apart.
#[test]
fn build_jobs_and_source_date_epoch() {
    if !ready(&[]) {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    base(&cli);
    let dockerfile = format!(
        "FROM {BASE} AS one\nRUN echo from-one > /one\nFROM {BASE} AS two\nRUN echo from-two > /two; echo two-says\nFROM {BASE}\nCOPY --from=one /one /one\nCOPY --from=two /two /two\n"
    );
    let build = |jobs: &str| {
        let out = with_stdin(
            &cli,
            &[
                "build",
                "--no-cache",
                "--jobs",
                jobs,
                "--source-date-epoch",
                "1700000000",
                "-",
            ],
            &dockerfile,
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        (
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            stderr,
        )
    };
    let (parallel, stderr) = build("2");
    assert!(stderr.contains(": 4 steps, 0 cached"), "{stderr}");
    let said = stderr
        .lines()
        .find(|l| l.ends_with(" two-says"))
        .expect("the RUN's output");
    let step = said.split(' ').next().unwrap();
    assert!(
        stderr.contains(&format!("{step} [two 2/2] RUN echo from-two")),
        "{stderr}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (serial, _) = build("1");
    assert_eq!(parallel, serial);

    let out = cli.imagectl(&["build", "--source-date-epoch", "soon", "-"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
}
