//! Helpers of the build parity and interop tests (`build_parity`,
//! `build_interop`): the corpus of Dockerfiles under `tests/parity/`, the
//! base images both builders start from, the two builders (buildah on a
//! private storage, `imagectl build` on our store), and the comparison of
//! what they built ([`image`]).
//!
//! Each test binary compiles this module on its own and uses only part of
//! it, hence the `dead_code` allowance.

#![allow(dead_code)]

pub mod image;
pub mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;

use image_testsupport::rootfs::busybox_rootfs;
use image_testsupport::tools::BUSYBOX;

use crate::common::Cli;
use image::Facts;
use tools::Containers;

/// The busybox base image every corpus Dockerfile but one starts from.
pub const BUSYBOX_BASE: &str = "parity-busybox";
/// The Debian base image (made from this machine's packages).
pub const DEBIAN_BASE: &str = "parity-debian";

/// The corpus directory.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity")
}

/// The full name our store (and the containers-storage copies) give
/// `name`: `parity-x` is `docker.io/library/parity-x:latest`.
pub fn full_name(name: &str) -> String {
    image_store::tags::normalize_name(name).expect("a valid name")
}

/// One corpus case: `tests/parity/<name>/` holds its `Dockerfile` and
/// build context, optionally a `.dockerignore`, a `Dockerfile.buildah`
/// (what buildah 1.28 builds instead, where the Dockerfile uses what it
/// predates: heredocs came in buildah 1.33) and an `args` file, one
/// setting a line:
/// - `build-arg K=V`: a `--build-arg`;
/// - `target S`: `--target S`;
/// - `tag NAME`: also tag the result NAME (a later case builds FROM it);
/// - `needs debian`: the case starts from [`DEBIAN_BASE`].
///
/// A `differences` file lists, one a line, the differences the case is
/// expected to show: where Docker's two builders disagree and we follow
/// BuildKit while buildah follows the classic builder. The case then
/// passes when exactly those are found.
///
/// Cases are built in name order, so a case tagged for another sorts
/// before it.
#[derive(Debug, Clone)]
pub struct Case {
    /// The directory name.
    pub name: String,
    /// The directory.
    pub dir: PathBuf,
    /// `--build-arg K=V` values.
    pub build_args: Vec<String>,
    /// `--target`.
    pub target: Option<String>,
    /// Extra tags.
    pub tags: Vec<String>,
    /// Whether it starts from the Debian base.
    pub debian: bool,
}

impl Case {
    /// Reads the case in `dir`.
    ///
    /// # Panics
    /// On an `args` line it does not know.
    pub fn read(dir: &Path) -> Case {
        let mut case = Case {
            name: dir
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned(),
            dir: dir.to_owned(),
            build_args: Vec::new(),
            target: None,
            tags: Vec::new(),
            debian: false,
        };
        let args = std::fs::read_to_string(dir.join("args")).unwrap_or_default();
        for line in args
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            match line.split_once(' ') {
                Some(("build-arg", v)) => case.build_args.push(v.to_owned()),
                Some(("target", v)) => case.target = Some(v.to_owned()),
                Some(("tag", v)) => case.tags.push(v.to_owned()),
                Some(("needs", "debian")) => case.debian = true,
                _ => panic!("{}: unknown args line {line:?}", case.name),
            }
        }
        case
    }

    /// The tag both builders give the case's image.
    pub fn tag(&self) -> String {
        format!("parity-{}", self.name)
    }

    /// The Dockerfile buildah builds.
    pub fn buildah_dockerfile(&self, context: &Path) -> PathBuf {
        let own = self.dir.join("Dockerfile.buildah");
        if own.is_file() {
            own
        } else {
            context.join("Dockerfile")
        }
    }

    /// `--build-arg` and `--target` as command-line arguments.
    pub fn options(&self) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.build_args {
            out.extend(["--build-arg".to_owned(), a.clone()]);
        }
        if let Some(t) = &self.target {
            out.extend(["--target".to_owned(), t.clone()]);
        }
        out
    }

    /// The build context, copied to `dest` without the case's own files
    /// (`args`, `Dockerfile.buildah`), with what git does not keep made
    /// the same for everyone: owner root, directories 0755, files 0644 or
    /// 0755 (executable in the checkout).
    pub fn context(&self, dest: &Path) -> PathBuf {
        let _ = std::fs::remove_dir_all(dest);
        copy_tree(&self.dir, dest, true);
        dest.to_owned()
    }
}

/// Copies `src` into `dest` (symlinks as symlinks), normalising modes and
/// owners; at the top level, leaves out a case's own files when `case`.
fn copy_tree(src: &Path, dest: &Path, case: bool) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dest).expect("mkdir");
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for entry in std::fs::read_dir(src).expect("read_dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if case && (name == "args" || name == "Dockerfile.buildah" || name == "differences") {
            continue;
        }
        let (from, to) = (entry.path(), dest.join(&name));
        let ft = entry.file_type().expect("file type");
        if ft.is_dir() {
            copy_tree(&from, &to, false);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).expect("readlink"), &to)
                .expect("symlink");
        } else {
            std::fs::copy(&from, &to).expect("copy");
            let exec = from.metadata().expect("stat").permissions().mode() & 0o100 != 0;
            let mode = if exec { 0o755 } else { 0o644 };
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        std::os::unix::fs::lchown(&to, Some(0), Some(0)).expect("chown");
    }
}

/// Every case of the corpus, in name order.
pub fn corpus() -> Vec<Case> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("the corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    dirs.sort();
    dirs.iter().map(|d| Case::read(d)).collect()
}

/// The root filesystem of [`BUSYBOX_BASE`]: busybox-static with every
/// applet, users and groups to resolve names against, and content of
/// varied modes and owners for the steps to delete, replace and copy.
pub fn busybox_base_rootfs(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("busybox --list");
    let applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| *a != "busybox")
        .map(str::to_owned)
        .collect();
    let applets: Vec<&str> = applets.iter().map(String::as_str).collect();
    busybox_rootfs(dir, &applets);
    let write = |p: &str, data: &str, mode: u32, owner: u32| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, data).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        std::os::unix::fs::lchown(&p, Some(owner), Some(owner)).expect("chown");
    };
    write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        0o644,
        0,
    );
    write(
        "etc/group",
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n",
        0o644,
        0,
    );
    write("usr/share/parity/a", "a\n", 0o644, 0);
    write("usr/share/parity/b", "b\n", 0o600, 1000);
    write("usr/share/parity/sub/c", "c\n", 0o755, 0);
    write("opt/keep/kept", "kept\n", 0o640, 50);
    write("home/app/.profile", "PS1='$ '\n", 0o644, 1000);
    std::os::unix::fs::lchown(dir.join("home/app"), Some(1000), Some(1000)).expect("chown");
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod");
}

/// The two builders and the bases they share: our store (through
/// imagectl, a [`Cli`]) and buildah's private storage, both below the
/// Cli's temporary directory.
pub struct Builders {
    /// buildah, podman and skopeo on their own storage (dropped first:
    /// its mounts are undone before the Cli checks that none is left).
    pub containers: Containers,
    /// imagectl on our store.
    pub cli: Cli,
    debian: Option<Result<(), String>>,
}

impl Builders {
    /// Both stores, with [`BUSYBOX_BASE`] made in ours and copied into
    /// buildah's.
    pub fn new(cli: Cli) -> Builders {
        let containers = Containers::new(&cli.tmp.path().join("containers"));
        let b = Builders {
            cli,
            containers,
            debian: None,
        };
        let rootfs = b.cli.tmp.path().join("busybox-root");
        busybox_base_rootfs(&rootfs);
        b.add_base(&rootfs, BUSYBOX_BASE, "sh");
        b
    }

    /// Appends the image `name` of `rootfs` to our store and copies it
    /// into buildah's, the same image in both.
    fn add_base(&self, rootfs: &Path, name: &str, cmd: &str) {
        self.cli.ok(&[
            "append",
            "--rootfs",
            rootfs.to_str().expect("utf8"),
            "--tag",
            name,
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--cmd",
            cmd,
        ]);
        self.containers.load(&self.cli.store(), &full_name(name));
    }

    /// Makes [`DEBIAN_BASE`] once; the reason when this machine cannot.
    pub fn debian(&mut self) -> Result<(), String> {
        if self.debian.is_none() {
            let rootfs = self.cli.tmp.path().join("debian-root");
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity_support/debian-root.sh");
            let made = if image_testsupport::tools::which("dpkg-query").is_none() {
                Err("no dpkg-query: this machine is not Debian-based, no Debian root can be made offline".to_owned())
            } else {
                let mut cmd = Command::new("sh");
                cmd.arg(script).arg(&rootfs);
                tools::output(cmd).map(drop)
            };
            if made.is_ok() {
                self.add_base(&rootfs, DEBIAN_BASE, "bash");
            }
            self.debian = Some(made);
        }
        self.debian.clone().expect("made")
    }

    /// The base image a case starts from, as buildah has it.
    pub fn base_facts(&self, case: &Case) -> Facts {
        let base = if case.debian {
            DEBIAN_BASE
        } else {
            BUSYBOX_BASE
        };
        Facts::from_oci_layout(&self.cli.store(), &full_name(base))
    }

    /// buildah builds the case (tagged [`Case::tag`] and its extra tags)
    /// and its image is read; the failure text when it does not build.
    pub fn buildah(&self, case: &Case) -> Result<Facts, String> {
        self.buildah_as(case, &case.tag(), &[])
    }

    /// [`Builders::buildah`] with another tag and extra options.
    pub fn buildah_as(&self, case: &Case, tag: &str, extra: &[&str]) -> Result<Facts, String> {
        let context = case.context(&self.scratch(&format!("buildah-ctx-{tag}")));
        let mut options = case.options();
        options.extend(extra.iter().map(|s| (*s).to_owned()));
        self.containers
            .build(&case.buildah_dockerfile(&context), &context, &options, tag)?;
        for t in &case.tags {
            let mut cmd = self.containers.command("buildah");
            cmd.args(["tag", tag, t]);
            tools::output(cmd)?;
        }
        let out = self.scratch(&format!("buildah-image-{tag}"));
        let _ = std::fs::remove_dir_all(&out);
        self.containers.push_dir(tag, &out);
        Ok(Facts::from_dir_transport(&out))
    }

    /// `imagectl build` builds the case into our store (tagged
    /// [`Case::tag`] and its extra tags) and its image is read; the
    /// failure text when it does not build.
    pub fn ours(&self, case: &Case) -> Result<Facts, String> {
        let context = case.context(&self.scratch(&format!("ours-ctx-{}", case.name)));
        let mut args: Vec<String> = vec!["build".into(), "-t".into(), case.tag()];
        for t in &case.tags {
            args.extend(["-t".to_owned(), t.clone()]);
        }
        args.extend(case.options());
        args.push(context.to_string_lossy().into_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tools::output(self.cli.command(&args))?;
        Ok(Facts::from_oci_layout(
            &self.cli.store(),
            &full_name(&case.tag()),
        ))
    }

    /// A fresh directory path below the temporary directory (not created).
    fn scratch(&self, name: &str) -> PathBuf {
        self.cli.tmp.path().join("work").join(name)
    }
}
