//! The other tools of the parity and interop tests, each confined to a
//! temporary directory: buildah, podman and skopeo on a private
//! containers-storage (vfs driver, its own storage.conf and
//! registries.conf, never /var/lib/containers).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image_testsupport::process::run_bounded;
use image_testsupport::tools::which;

/// The OCI runtime buildah and podman run steps with: runc when installed
/// (crun 1.x refuses hosts whose cgroups are in hybrid mode, as this
/// machine's are, when called through containers/common), else crun.
pub fn oci_runtime() -> &'static str {
    if which("runc").is_some() {
        "runc"
    } else {
        "crun"
    }
}

/// Runs `cmd` within the tests' time limit; its output, or the failure
/// text naming the command and what it printed.
pub fn output(cmd: Command) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    let out = run_bounded(cmd);
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// [`output`], failing the test on failure; returns stdout.
pub fn checked(cmd: Command) -> String {
    let out = output(cmd).unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// buildah, podman and skopeo on a containers-storage of their own below
/// `dir`.
pub struct Containers {
    dir: PathBuf,
}

impl Containers {
    /// A fresh storage below `dir` (created).
    pub fn new(dir: &Path) -> Containers {
        std::fs::create_dir_all(dir.join("tmp")).expect("mkdir");
        // With no storage.conf of their own the tools read /etc's; with
        // an unqualified-search list, a short name never prompts.
        // (podman wants the roots there too, not only as flags).
        let conf = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            dir.join("root").display(),
            dir.join("runroot").display()
        );
        std::fs::write(dir.join("storage.conf"), conf).expect("write");
        std::fs::write(
            dir.join("registries.conf"),
            "unqualified-search-registries = [\"docker.io\"]\nshort-name-mode = \"permissive\"\n",
        )
        .expect("write");
        Containers {
            dir: dir.to_owned(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn runroot(&self) -> PathBuf {
        self.dir.join("runroot")
    }

    /// `program` (buildah, podman or skopeo) with this storage's
    /// configuration, not yet run.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.dir.join("registries.conf"),
            )
            .env("TMPDIR", self.dir.join("tmp"));
        if program != "skopeo" {
            cmd.arg("--root")
                .arg(self.root())
                .arg("--runroot")
                .arg(self.runroot())
                .args(["--storage-driver", "vfs"]);
        }
        if program == "podman" {
            cmd.args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        }
        cmd
    }

    /// This storage as a skopeo transport, for the image `name`.
    pub fn transport(&self, name: &str) -> String {
        format!(
            "containers-storage:[vfs@{}+{}]{name}",
            self.root().display(),
            self.runroot().display()
        )
    }

    /// Copies the image `name` from an OCI layout (our store) into this
    /// storage, under the same name.
    pub fn load(&self, layout: &Path, name: &str) {
        let mut cmd = self.command("skopeo");
        cmd.args(["copy", "--quiet"])
            .arg(format!("oci:{}:{name}", layout.display()))
            .arg(self.transport(name));
        checked(cmd);
    }

    /// `buildah build` of `context` with one layer per step and Docker's
    /// config format (the OCI format has no Healthcheck, OnBuild or
    /// Shell), the base images only from this storage, no network (as our
    /// RUN's default), tagged `tag`.
    pub fn build(
        &self,
        dockerfile: &Path,
        context: &Path,
        extra: &[String],
        tag: &str,
    ) -> Result<(), String> {
        let mut cmd = self.command("buildah");
        cmd.args([
            "build",
            "--pull=never",
            "--layers",
            "--format",
            "docker",
            "--network",
            "none",
            "--isolation",
            "oci",
            "--runtime",
            oci_runtime(),
            "--cgroup-manager",
            "cgroupfs",
            "--identity-label=false",
            "--quiet",
            "-t",
            tag,
            "-f",
        ])
        .arg(dockerfile)
        .args(extra)
        .arg(context);
        output(cmd).map(drop)
    }

    /// Writes the image `name` to `dir:DEST` as it is (Docker's manifest
    /// and config bytes).
    pub fn push_dir(&self, name: &str, dest: &Path) {
        let mut cmd = self.command("buildah");
        cmd.args(["push", "--quiet", name])
            .arg(format!("dir:{}", dest.display()));
        checked(cmd);
    }
}
