//! The other tools of the parity and interop tests, each confined to a
//! temporary directory: buildah, podman and skopeo on a private
//! containers-storage (overlay driver, its own storage.conf and
//! registries.conf, never /var/lib/containers).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use image_testsupport::process::kill_group;
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

/// How long one build (or other tool run) may take before it counts as
/// hung: generous, because builds on a loaded machine are slow; a guard
/// against hanging, never a measure.
pub const TIMEOUT: Duration = Duration::from_secs(900);

/// Runs `cmd` (stdin from /dev/null) as the leader of a process group of
/// its own, killed with that group after [`TIMEOUT`]; its output, or the
/// failure text naming the command and what it printed. A timeout is a
/// failure of that command, not a panic, so a corpus run reports every
/// case.
pub fn output(mut cmd: Command) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{shown}: cannot start: {e}"))?;
    // Drained while it runs, so a chatty command never blocks on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("{shown}: {e}"))? {
            break Some(status);
        }
        if Instant::now() > deadline {
            kill_group(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let text = || {
        format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )
    };
    match status {
        Some(status) if status.success() => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        Some(status) => Err(format!("{shown} failed ({status}):\n{}", text())),
        None => Err(format!("{shown} timed out after {TIMEOUT:?}:\n{}", text())),
    }
}

/// [`output`], failing the test on failure; returns stdout.
pub fn checked(cmd: Command) -> String {
    let out = output(cmd).unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// buildah, podman and skopeo on a containers-storage of their own below
/// `dir`. The overlay driver, as Docker's overlay2 and our snapshots: with
/// vfs, buildah stores a hard link that a RUN makes to a file of a lower
/// layer as a second copy (its diff sees only the new name), which no
/// overlay-based builder does.
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
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
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
                .args(["--storage-driver", "overlay"]);
        }
        if program == "podman" {
            cmd.args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        }
        cmd
    }

    /// This storage as a skopeo transport, for the image `name`.
    pub fn transport(&self, name: &str) -> String {
        format!(
            "containers-storage:[overlay@{}+{}]{name}",
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

impl Drop for Containers {
    /// Undoes the mounts left below the storage, deepest first: the
    /// overlay driver keeps its home directory mounted (a private bind)
    /// after a command that does not shut the driver down (`skopeo copy`
    /// into the storage). They are the tools' own, so they do not count as
    /// our leaks; ours are checked by the [`crate::common::Cli`] beside.
    fn drop(&mut self) {
        use image_overlay::mount::{Mounter, SysMounter};
        let below = self.dir.to_string_lossy().into_owned();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&below))
            .map(PathBuf::from)
            .collect();
        points.sort();
        for p in points.iter().rev() {
            if SysMounter.unmount(p, false).is_err() {
                let _ = SysMounter.unmount(p, true);
            }
        }
    }
}
