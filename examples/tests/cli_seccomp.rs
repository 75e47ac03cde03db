//! `imagectl run --security-opt seccomp=...` end to end, as root, on an
//! image appended from a busybox-static root filesystem: Docker's default
//! profile applies unless `seccomp=unconfined` or a profile file is given
//! (under the native backend, and runc when installed); a bad option or a
//! missing profile is refused before anything runs. A missing tool or
//! privilege skips loudly unless CI=true.

mod common;

use common::{container_rootfs, ready, which, Cleanup, Cli};

const IMAGE: &str = "test.local/cli-seccomp:1";
const APPLETS: &[&str] = &["sh", "grep", "uname", "true"];

/// The `Seccomp:` mode of the container's shell (0 none, 2 a filter).
const MODE: &str = "grep '^Seccomp:' /proc/self/status";

#[test]
fn imagectl_run_security_opt_seccomp() {
    if !ready(&[]) {
        return;
    }
    let cli = Cli::new(Cleanup::ContainersAndCgroups);
    let rootfs = cli.tmp.path().join("rootfs");
    container_rootfs(&rootfs, APPLETS);
    cli.append_shell_image(&rootfs, IMAGE);
    let profile = cli.tmp.path().join("no-uname.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let custom = format!("seccomp={}", profile.display());

    let mut runtimes = vec![vec![]];
    if which("runc").is_some() {
        runtimes.push(vec!["--runtime", "runc"]);
    }
    for rt in &runtimes {
        let run = |extra: &[&str], cmd: &[&str]| {
            let mut args = vec!["run", "--rm"];
            args.extend(rt);
            args.extend(extra);
            args.push(IMAGE);
            args.extend(cmd);
            cli.ok(&args)
        };
        // The default profile: a filter, and uname works.
        assert_eq!(run(&[], &["sh", "-c", MODE]), "Seccomp:\t2\n", "{rt:?}");
        assert_eq!(run(&[], &["uname", "-s"]), "Linux\n", "{rt:?}");
        // unconfined: no filter.
        let unconfined = ["--security-opt", "seccomp=unconfined"];
        assert_eq!(
            run(&unconfined, &["sh", "-c", MODE]),
            "Seccomp:\t0\n",
            "{rt:?}"
        );
        // A profile that denies uname(2): busybox cannot tell the name.
        let with = ["--security-opt", custom.as_str()];
        assert_eq!(run(&with, &["uname", "-s"]), "\n", "{rt:?}");
    }

    // Refusals, before any container is made.
    let out = cli.imagectl(&["run", "--rm", "--security-opt", "apparmor=x", IMAGE, "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unsupported --security-opt \"apparmor=x\""),
        "{err}"
    );
    let missing = cli.tmp.path().join("absent.json");
    let opt = format!("seccomp={}", missing.display());
    let out = cli.imagectl(&["run", "--rm", "--security-opt", &opt, IMAGE, "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&missing.display().to_string()), "{err}");
    std::fs::write(&profile, br#"{"defaultAction": "SCMP_ACT_NOPE"}"#).unwrap();
    let out = cli.imagectl(&["run", "--rm", "--security-opt", &custom, IMAGE, "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("parsing the seccomp profile"), "{err}");
    let ps = cli.ok(&["ps"]);
    assert!(!ps.contains(IMAGE), "a container was left: {ps}");
}
