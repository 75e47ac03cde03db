//! Helpers shared by the end-to-end `imagectl` tests (`cli_run`,
//! `cli_native`, `cli_snapshots`): the loud skip when a tool or privilege
//! is missing, bounded runs of a command, a busybox-static root filesystem,
//! and [`Cli`], an `imagectl` on a store in a temporary directory that
//! cleans up after itself.
//!
//! Each test binary compiles this module on its own and uses only part of
//! it, hence the `dead_code` allowance.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use image_overlay::mount::{Mounter, SysMounter};

pub mod pty;

#[allow(unused_imports)] // each test binary uses a part
pub use image_testsupport::process::{kill_group, run_bounded, run_bounded_in_group, TIMEOUT};
#[allow(unused_imports)] // each test binary uses a part
pub use image_testsupport::rootfs::{busybox_rootfs, container_rootfs};
#[allow(unused_imports)] // each test binary uses a part
pub use image_testsupport::tools::{ready, which};

/// The host's platform and one the host cannot run (arm64, or amd64 on an
/// arm64 host), as `--platform` takes them (`os/arch`).
#[allow(dead_code)]
pub fn host_and_foreign_platforms() -> (String, &'static str) {
    let host = image_core::Platform::host();
    let foreign = if host.architecture == "arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    (format!("{}/{}", host.os, host.architecture), foreign)
}

/// What dropping a [`Cli`] undoes, then checks (the checks are left out
/// when the test is already panicking).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// Kills the background runs ([`Cli::spawn`]) and removes every
    /// container (`rm -f`), then fails if anything below the temporary
    /// directory is still mounted.
    Containers,
    /// As [`Cleanup::Containers`], and fails too if a cgroup of a removed
    /// container is left.
    ContainersAndCgroups,
    /// Unmounts every mount point below the temporary directory (lazily if
    /// busy), deepest first, then fails if there was any.
    Mounts,
}

/// `imagectl` on a store (`<tmp>/store`, so its containers and snapshots
/// state is next to it) in a temporary directory, with
/// `IMAGECTL_STATE`/`IMAGECTL_SNAPSHOTS` removed from its environment.
/// Dropping it cleans up as its [`Cleanup`] says.
pub struct Cli {
    /// The temporary directory; everything of the test lives below it.
    pub tmp: tempfile::TempDir,
    background: Vec<Child>,
    own_group: bool,
    cleanup: Cleanup,
}

impl Cli {
    /// A fresh, empty store; imagectl runs in the test's process group.
    pub fn new(cleanup: Cleanup) -> Cli {
        Cli {
            tmp: tempfile::tempdir().expect("tempdir"),
            background: Vec::new(),
            own_group: false,
            cleanup,
        }
    }

    /// From now on each imagectl is spawned as the leader of a process
    /// group of its own, and that group is killed on timeout.
    pub fn in_own_process_groups(mut self) -> Cli {
        self.own_group = true;
        self
    }

    /// The store directory.
    pub fn store(&self) -> PathBuf {
        self.tmp.path().join("store")
    }

    /// `imagectl --store <store> args`, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagectl"));
        cmd.arg("--store").arg(self.store()).args(args);
        cmd.env_remove("IMAGECTL_STATE")
            .env_remove("IMAGECTL_SNAPSHOTS");
        cmd
    }

    /// Runs imagectl within [`TIMEOUT`]; returns its output, whatever its
    /// exit status.
    pub fn imagectl(&self, args: &[&str]) -> Output {
        let cmd = self.command(args);
        if self.own_group {
            run_bounded_in_group(cmd)
        } else {
            run_bounded(cmd)
        }
    }

    /// Runs imagectl and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.imagectl(args);
        assert!(
            out.status.success(),
            "imagectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs imagectl and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.imagectl(args);
        assert!(
            !out.status.success(),
            "imagectl {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Appends the image `tag` from `rootfs`, with `PATH=/bin` and `sh` as
    /// its command.
    pub fn append_shell_image(&self, rootfs: &Path, tag: &str) {
        self.ok(&[
            "append",
            "--rootfs",
            rootfs.to_str().expect("utf8"),
            "--tag",
            tag,
            "--env",
            "PATH=/bin",
            "--cmd",
            "sh",
        ]);
    }

    /// A [`Cli`] whose store holds the image `tag` of a busybox root
    /// filesystem with `applets` ([`Cli::append_shell_image`]), or `None`
    /// when a container cannot run here ([`ready`] skipped loudly).
    pub fn with_shell_image(applets: &[&str], tag: &str) -> Option<Cli> {
        if !ready(&[]) {
            return None;
        }
        let cli = Cli::new(Cleanup::Containers);
        let rootfs = cli.tmp.path().join("rootfs");
        container_rootfs(&rootfs, applets);
        cli.append_shell_image(&rootfs, tag);
        Some(cli)
    }

    /// Starts imagectl in the background, in its own process group, killed
    /// on drop if still there.
    pub fn spawn(&mut self, args: &[&str]) {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        self.background.push(cmd.spawn().expect("spawn imagectl"));
    }

    /// Waits until `ps` shows container `name` running.
    pub fn wait_running(&self, name: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let ps = self.ok(&["ps"]);
            if ps
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains("running"))
            {
                return;
            }
            assert!(Instant::now() < deadline, "{name} never running: {ps}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The lines of `imagectl snapshots` for snapshots that are not
    /// committed (what a finished container or build must not leave).
    pub fn active_snapshots(&self) -> Vec<String> {
        self.ok(&["snapshots"])
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with("committed"))
            .map(str::to_owned)
            .collect()
    }

    /// Mount points below the temporary directory, deepest first.
    pub fn mounted(&self) -> Vec<PathBuf> {
        let tmp = self.tmp.path().to_string_lossy().into_owned();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&tmp))
            .map(PathBuf::from)
            .collect();
        points.sort();
        points.reverse();
        points
    }

    /// [`Cleanup::Containers`] and [`Cleanup::ContainersAndCgroups`].
    fn remove_containers(&mut self) {
        for c in &mut self.background {
            kill_group(c);
            let _ = c.wait();
        }
        let ids = self.imagectl(&["ps", "-q"]);
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        for id in &ids {
            let _ = self.imagectl(&["rm", "-f", id]);
        }
        if std::thread::panicking() {
            return;
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let tmp = self.tmp.path().to_string_lossy().into_owned();
        let left: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&tmp)).collect();
        assert!(left.is_empty(), "left mounted: {left:?}");
        if self.cleanup == Cleanup::ContainersAndCgroups {
            for id in &ids {
                let dirs = image_runtime::cgroup::container_dirs(id).unwrap_or_default();
                let left: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
                assert!(left.is_empty(), "cgroups left: {left:?}");
            }
        }
    }

    /// [`Cleanup::Mounts`].
    fn unmount_all(&self) {
        let left = self.mounted();
        for p in &left {
            if SysMounter.unmount(p, false).is_err() {
                let _ = SysMounter.unmount(p, true);
            }
        }
        if !left.is_empty() && !std::thread::panicking() {
            panic!("left mounted: {left:?}");
        }
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        match self.cleanup {
            Cleanup::Containers | Cleanup::ContainersAndCgroups => self.remove_containers(),
            Cleanup::Mounts => self.unmount_all(),
        }
    }
}
