//! Progress bars: `load`, `save`, `copy` and `unpack` draw them on a
//! terminal, and print nothing more when standard error is not a terminal
//! or with `--quiet`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{run_bounded, which, Cleanup, Cli};

/// A 2 MiB file that does not compress, in `dir`.
fn rootfs(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..2 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("big"), data).expect("write");
}

/// The commands with bars, each given a fresh target, as argument lists.
fn commands(cli: &Cli, round: &str) -> Vec<Vec<String>> {
    let tmp = cli.tmp.path();
    let p = |name: &str| tmp.join(format!("{round}-{name}")).display().to_string();
    vec![
        vec!["save".into(), "-o".into(), p("img.tar"), "t/p:1".into()],
        vec!["load".into(), p("img.tar")],
        vec![
            "copy".into(),
            "t/p:1".into(),
            format!("oci:{}:t/p:2", p("layout")),
        ],
        vec!["unpack".into(), "t/p:1".into(), p("rootfs")],
    ]
}

fn cli_with_image() -> Cli {
    let cli = Cli::new(Cleanup::Mounts);
    let dir = cli.tmp.path().join("src");
    rootfs(&dir);
    cli.ok(&[
        "append",
        "--rootfs",
        dir.to_str().expect("utf8"),
        "--tag",
        "t/p:1",
    ]);
    cli
}

/// What each command writes to standard error when it succeeds, without bars.
fn expected_stderr(args: &[String]) -> bool {
    args[0] == "save"
}

#[test]
fn without_a_terminal_or_with_quiet_nothing_more_is_printed() {
    let cli = cli_with_image();
    for (round, quiet) in [("piped", false), ("quiet", true)] {
        for mut args in commands(&cli, round) {
            if quiet {
                args.insert(0, "--quiet".into());
            }
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = cli.imagectl(&argv);
            assert!(out.status.success(), "{args:?}: {out:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let cmd = args.iter().find(|a| !a.starts_with('-')).expect("command");
            if expected_stderr(std::slice::from_ref(cmd)) {
                // `save` reports what it wrote on one line, as before.
                assert!(
                    stderr.starts_with("saved ") && stderr.lines().count() == 1,
                    "{args:?}: {stderr:?}"
                );
            } else {
                assert!(stderr.is_empty(), "{args:?}: {stderr:?}");
            }
            assert!(!stderr.contains('\x1b'), "{args:?}: {stderr:?}");
        }
    }
}

/// Runs `imagectl args` with a terminal as its standard error (util-linux
/// `script`), returning what the terminal showed.
fn on_a_terminal(cli: &Cli, args: &[String]) -> String {
    let mut line = format!(
        "{} --store {}",
        env!("CARGO_BIN_EXE_imagectl"),
        cli.store().display()
    );
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_remove("IMAGECTL_STATE")
        .env_remove("IMAGECTL_SNAPSHOTS");
    let out = run_bounded(cmd);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn on_a_terminal_bars_are_drawn_unless_quiet() {
    if which("script").is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "CI=true and missing: script (util-linux)");
        eprintln!("SKIPPED: missing script (util-linux)");
        return;
    }
    let cli = cli_with_image();
    for args in commands(&cli, "tty") {
        let shown = on_a_terminal(&cli, &args);
        // A bar counts bytes in binary units; no command prints them otherwise.
        assert!(shown.contains("MiB"), "{args:?}: {shown:?}");
    }
    for mut args in commands(&cli, "tty-quiet") {
        args.insert(0, "--quiet".into());
        let shown = on_a_terminal(&cli, &args);
        assert!(!shown.contains("MiB"), "{args:?}: {shown:?}");
        assert!(!shown.contains('\x1b'), "{args:?}: {shown:?}");
    }
}
