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

/// The directory `ctx` of the test, holding a Dockerfile of `text`.
fn context(cli: &Cli, text: &str) -> std::path::PathBuf {
    let ctx = cli.tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), text).unwrap();
    ctx
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

/// Processes whose root directory is below `dir` (a container's).
fn processes_rooted_in(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(root) = std::fs::read_link(entry.path().join("root")) {
            if root.starts_with(dir) {
                let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                found.push(format!("{name}: {}", String::from_utf8_lossy(&cmd)));
            }
        }
    }
    found
}

/// Ctrl-C: SIGINT while a RUN runs stops the build (the library's
/// interrupt, not the signal's default action): imagectl exits 130 with
/// one line on stderr long before the RUN would end, and leaves no
/// container process, no mount, no active snapshot, no lease; fsck is
/// clean and the store builds again.
#[test]
fn sigint_stops_a_build_and_leaves_nothing_behind() {
    use std::io::BufRead;
    if !ready(&[]) {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    let rootfs = cli.tmp.path().join("rootfs");
    container_rootfs(&rootfs, &["sh", "echo", "sleep"]);
    cli.append_shell_image(&rootfs, BASE);
    // Left alone, the RUN takes five minutes.
    let ctx = context(
        &cli,
        &format!("FROM {BASE}\nRUN echo started && sleep 300\n"),
    );
    let mut child = cli
        .command(&["build", "--progress", "plain", ctx.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn imagectl");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            let _ = tx.send(line.clone());
            all.push(line);
        }
        all
    });
    // The RUN's own output says its container runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.ends_with(" started") => break,
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                panic!("the RUN never started: {e}");
            }
        }
    }
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    // Bounded by the RUN's length, not by a speed: stopped, it exits long
    // before the five minutes the sleep would take.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("imagectl did not stop on SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let lines = reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{lines:#?}");
    let errors: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("imagectl:"))
        .collect();
    assert_eq!(errors.len(), 1, "{lines:#?}");
    assert!(errors[0].starts_with("imagectl: cancelled"), "{lines:#?}");
    assert_eq!(lines.last(), Some(errors[0]), "one line, last: {lines:#?}");

    assert_eq!(processes_rooted_in(cli.tmp.path()), Vec::<String>::new());
    assert_eq!(cli.mounted(), Vec::<std::path::PathBuf>::new());
    let active = cli.active_snapshots();
    assert!(active.is_empty(), "active snapshots: {active:?}");
    let leases: Vec<_> = std::fs::read_dir(cli.store().join("leases"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leases.is_empty(), "leases left: {leases:?}");
    cli.ok(&["fsck"]);
    // The store is usable: a build of another step succeeds.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {BASE}\nRUN echo again\n"),
    )
    .unwrap();
    cli.ok(&["build", "--progress", "quiet", ctx.to_str().unwrap()]);
}

/// `--progress auto` (the default) on a terminal (util-linux `script`) is
/// the tty display: lines redrawn in place, each step settled with its
/// time, the RUN's output shown while it runs, the plain summary at the
/// end; off a terminal it is the plain display, with no escape sequence.
#[test]
fn progress_auto_draws_in_place_on_a_terminal_only() {
    if !ready(&["script"]) {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    base(&cli);
    let ctx = context(&cli, &format!("FROM {BASE}\nRUN echo from-the-run\n"));
    let line = format!(
        "{} --store {} build --no-cache {}",
        env!("CARGO_BIN_EXE_imagectl"),
        cli.store().display(),
        ctx.display()
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_remove("IMAGECTL_STATE")
        .env_remove("IMAGECTL_SNAPSHOTS");
    let out = common::run_bounded(cmd);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("\x1b[J"), "{shown:?}");
    assert!(shown.contains("from-the-run"), "{shown:?}");
    assert!(shown.contains("RUN echo from-the-run DONE "), "{shown:?}");
    assert!(shown.contains("Built sha256:"), "{shown:?}");

    let out = cli.imagectl(&["build", "--no-cache", ctx.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    assert!(stderr.contains(" from-the-run\n"), "{stderr}");
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

/// A CLI with the base image, a context of `dockerfile`, the host's
/// platform and a foreign one as `--platform` takes them (`host,foreign`),
/// and the foreign one.
fn two_platforms(dockerfile: &str) -> (Cli, std::path::PathBuf, String, &'static str) {
    let cli = Cli::new(Cleanup::Mounts);
    base(&cli);
    let ctx = context(&cli, dockerfile);
    let (host, foreign) = common::host_and_foreign_platforms();
    (cli, ctx, format!("{host},{foreign}"), foreign)
}

/// `--platform` with two platforms, the cross-compile pattern: the index
/// of two manifests is printed and tagged, each entry with its platform,
/// and `--annotation index:` lands on it (read by skopeo); a RUN in a stage
/// for the platform the host cannot run is refused before any step, naming
/// the stage and the platform.
#[test]
fn build_platforms_makes_an_index_and_refuses_a_foreign_run_first() {
    if !ready(&["skopeo"]) {
        return;
    }
    let (cli, ctx, platforms, foreign) = two_platforms(&format!(
        "FROM --platform=$BUILDPLATFORM {BASE} AS build\nARG TARGETARCH\nRUN mkdir /out && echo $TARGETARCH > /out/arch\nFROM scratch\nCOPY --from=build /out /out\n"
    ));
    let id = cli.ok(&[
        "build",
        "--platform",
        &platforms,
        "--annotation",
        "index:org.example.index=yes",
        "-t",
        "test.local/multi:1",
        ctx.to_str().unwrap(),
    ]);
    let id = id.trim();
    let name = image_store::tags::normalize_name("test.local/multi:1").expect("name");
    let src = format!("oci:{}:{name}", cli.store().display());
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", &src])
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = image_core::Digest::sha256(&out.stdout);
    assert_eq!(
        digest.to_string(),
        id,
        "the index printed is the one tagged"
    );
    let index: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["annotations"]["org.example.index"], "yes");
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().expect("arch"))
        .collect();
    assert_eq!(
        archs,
        [
            image_core::Platform::host().architecture.as_str(),
            &foreign[6..]
        ]
    );

    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM --platform=$BUILDPLATFORM {BASE} AS build\nRUN echo ran\nFROM scratch AS out\nRUN true\n"),
    )
    .unwrap();
    let out = cli.imagectl(&["build", "--platform", foreign, ctx.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("stage out") && stderr.contains(foreign),
        "{stderr}"
    );
    assert!(!stderr.contains("#1 "), "no step started: {stderr}");
}

/// `--output type=docker` of a multi-platform build: a Docker archive's
/// `manifest.json` lists images (`docker load`, `podman load` and skopeo's
/// `docker-archive:` take one image per entry), so the index is refused
/// before any step, naming `type=oci`, and nothing is written or tagged;
/// `type=oci` writes the index, as skopeo reads it.
#[test]
fn build_platforms_refuses_a_docker_archive_first_and_writes_an_oci_one() {
    if !ready(&["skopeo"]) {
        return;
    }
    let (cli, ctx, platforms, _) = two_platforms(&format!(
        "FROM --platform=$BUILDPLATFORM {BASE} AS build\nRUN mkdir /out && echo built > /out/file\nFROM scratch\nCOPY --from=build /out /out\n"
    ));
    let docker = cli.tmp.path().join("multi-docker.tar");
    let out = cli.imagectl(&[
        "build",
        "--progress",
        "plain",
        "--platform",
        &platforms,
        "-t",
        "test.local/multi:1",
        "--output",
        &format!("type=docker,dest={}", docker.display()),
        ctx.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("unsupported") && stderr.contains("type=oci"),
        "{stderr}"
    );
    assert!(!stderr.contains("#1 "), "no step started: {stderr}");
    assert!(!docker.exists());
    assert!(!cli.ok(&["images"]).contains("test.local/multi"));

    let oci = cli.tmp.path().join("multi-oci.tar");
    let id = cli.ok(&[
        "build",
        "--platform",
        &platforms,
        "--output",
        &format!("type=oci,dest={}", oci.display()),
        ctx.to_str().unwrap(),
    ]);
    let out = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            &format!("oci-archive:{}", oci.display()),
        ])
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        image_core::Digest::sha256(&out.stdout).to_string(),
        id.trim()
    );
    let index: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(index["manifests"].as_array().expect("manifests").len(), 2);
}
