//! `imagectl build --secret` and `--allow` end to end, as root, on a base
//! image appended in the test from a busybox-static root filesystem. A
//! missing tool or privilege skips the test loudly unless CI=true.

mod common;

use common::{container_rootfs, ready, Cleanup, Cli};

const BASE: &str = "test.local/secret-base:1";

#[test]
fn build_mounts_secrets_from_a_file_and_a_variable_and_needs_allow_for_insecure() {
    if !ready(&[]) {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    let rootfs = cli.tmp.path().join("rootfs");
    container_rootfs(&rootfs, &["sh", "cat", "test", "echo"]);
    cli.append_shell_image(&rootfs, BASE);
    let ctx = cli.tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    let file = cli.tmp.path().join("token");
    std::fs::write(&file, "secret-file-token").unwrap();
    // The values the RUN compares the secrets with, so that the
    // Dockerfile (shown in the progress) does not hold them.
    std::fs::write(ctx.join("f"), "secret-file-token").unwrap();
    std::fs::write(ctx.join("v"), "secret-variable-token").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {BASE}\nCOPY f v /want/\n\
             RUN --mount=type=secret,id=f --mount=type=secret,id=v,env=V,required \
             sh -c 'test \"$(cat /run/secrets/f)\" = \"$(cat /want/f)\" && test \"$V\" = \"$(cat /want/v)\"'\n"
        ),
    )
    .unwrap();
    let mut cmd = cli.command(&[
        "build",
        "--secret",
        &format!("id=f,src={}", file.display()),
        "--secret",
        "id=v,env=IMAGECTL_SECRET_V",
        ctx.to_str().unwrap(),
    ]);
    let out = cmd
        .env("IMAGECTL_SECRET_V", "secret-variable-token")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("-token"), "{stderr}");

    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {BASE}\nRUN --security=insecure true\n"),
    )
    .unwrap();
    let out = cli.imagectl(&["build", ctx.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("security.insecure"), "{stderr}");
}
